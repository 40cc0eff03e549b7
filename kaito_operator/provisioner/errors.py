"""The provisioner's error contract and its one classification table (no Azure SDK import).

ARM reports the same failure under different HTTP statuses (quota errors arrive as 400 or 409
from preflight, or as a failed long-running operation with no status at all), so the table
looks at the ARM error code first and falls back to the status.  ``azure.classify`` extracts
status/code/message from azure-core exceptions and calls :func:`classify_error`; a pool whose
``provisioningError`` is set goes through the same table via :func:`error_for`.
"""

from __future__ import annotations

import email.utils
import enum
import time
from collections.abc import Mapping

__all__ = [
    "AuthenticationFailed",
    "ErrorClass",
    "InvalidPoolParameters",
    "OperationInProgress",
    "PermanentPoolError",
    "PoolNotFound",
    "PoolNotOwned",
    "ProvisionerError",
    "QuotaExceeded",
    "RetryableArmError",
    "SkuNotAvailable",
    "classify_error",
    "error_for",
    "parse_retry_after",
]


class ProvisionerError(Exception):
    """Base of every error the Azure side raises; the cloud's message is kept verbatim."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class PermanentPoolError(ProvisionerError):
    """Retrying the same request cannot succeed: report it on the Machine and stop."""


class QuotaExceeded(PermanentPoolError):
    """Quota (cores, pools) or capacity (subnet addresses) is exhausted."""


class SkuNotAvailable(PermanentPoolError):
    """The VM size is not offered, restricted, or cannot be allocated in the region or zone."""


class InvalidPoolParameters(PermanentPoolError):
    """The pool request is invalid (name, VM size, disk size, labels, taints)."""


class PoolNotOwned(PermanentPoolError):
    """A pool with the Machine's name exists but lacks our labels; it is never modified."""


class RetryableArmError(ProvisionerError):
    """Throttling, server errors, timeouts: retry after ``retry_after`` seconds (or backoff)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class OperationInProgress(RetryableArmError):
    """Another operation on the pool is running (409); wait for it and look again."""


class AuthenticationFailed(ProvisionerError):
    """The identity could not get a token or is not allowed; fixing it needs a human."""


class PoolNotFound(ProvisionerError):
    """The pool does not exist (404) where one was required."""


class ErrorClass(enum.Enum):
    """What a failure means for the Machine; the controller acts on this and nothing else."""

    QUOTA_EXCEEDED = "QuotaExceeded"
    SKU_NOT_AVAILABLE = "SkuNotAvailable"
    INVALID_PARAMETERS = "InvalidParameters"
    RETRYABLE = "Retryable"
    CONFLICT = "Conflict"
    AUTHENTICATION = "Authentication"
    NOT_FOUND = "NotFound"

    @property
    def permanent(self) -> bool:
        return self in _PERMANENT


_PERMANENT = frozenset(
    {ErrorClass.QUOTA_EXCEEDED, ErrorClass.SKU_NOT_AVAILABLE, ErrorClass.INVALID_PARAMETERS}
)

QUOTA_CODES = frozenset(
    {
        "QuotaExceeded",
        "InsufficientVCPUQuota",
        "ErrCode_InsufficientVCPUQuota",
        "SubscriptionQuotaExceeded",
        "InsufficientSubnetSize",  # too few addresses for the pool's nodes: capacity, not a typo
    }
)
SKU_CODES = frozenset(
    {
        "SkuNotAvailable",
        "ZonalAllocationFailed",
        "AllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
        "VMSizeNotSupported",
    }
)
INVALID_CODES = frozenset(
    {
        "InvalidParameter",
        "BadRequest",
        "InvalidRequestContent",
        "InvalidRequestFormat",
        "PropertyChangeNotAllowed",
        "MissingApiVersionParameter",
    }
)
AUTH_CODES = frozenset(
    {
        "AuthenticationFailed",
        "InvalidAuthenticationToken",
        "InvalidAuthenticationTokenTenant",
        "ExpiredAuthenticationToken",
        "AuthorizationFailed",
        "LinkedAuthorizationFailed",
    }
)
THROTTLE_CODES = frozenset({"TooManyRequests", "SubscriptionRequestsThrottled", "Throttled"})
CONFLICT_CODES = frozenset({"AnotherOperationInProgress", "Conflict", "OperationPreempted"})
NOT_FOUND_CODES = frozenset({"NotFound", "ResourceNotFound"})


def classify_error(status: int | None, code: str | None, message: str = "") -> ErrorClass:
    """The one table: ARM code first (it is stable across statuses), then the HTTP status.

    ``status`` is None for failed long-running operations and for transport errors; such a
    failure with an unknown code is retryable (a re-PUT reconciles a failed pool).
    """
    text = message.lower()
    if code in QUOTA_CODES or (code == "OperationNotAllowed" and "quota" in text):
        return ErrorClass.QUOTA_EXCEEDED
    if code in SKU_CODES:
        return ErrorClass.SKU_NOT_AVAILABLE
    if status in (401, 403) or code in AUTH_CODES:
        return ErrorClass.AUTHENTICATION
    if status == 429 or code in THROTTLE_CODES:
        return ErrorClass.RETRYABLE
    if status == 404 or code in NOT_FOUND_CODES:
        return ErrorClass.NOT_FOUND
    if (
        status == 409
        or code in CONFLICT_CODES
        or (code == "OperationNotAllowed" and "progress" in text)
    ):
        return ErrorClass.CONFLICT
    if code in INVALID_CODES:
        return ErrorClass.INVALID_PARAMETERS
    if status is not None and 400 <= status < 500 and status != 408:
        return ErrorClass.INVALID_PARAMETERS
    return ErrorClass.RETRYABLE


def auth_hint(resource_group: str, subscription_id: str, identity: str) -> str:
    """What to check when the identity fails: the settings a cluster admin can actually fix."""
    return (
        "check AZURE_CLIENT_ID and AZURE_TENANT_ID of the gpu-provisioner, the federated identity "
        f"credential for {identity}, and the identity's role assignment (e.g. Contributor) on "
        f"resource group {resource_group!r} in subscription {subscription_id!r}"
    )


def error_for(
    klass: ErrorClass,
    message: str,
    *,
    code: str | None = None,
    status: int | None = None,
    retry_after: float | None = None,
    hint: str = "",
) -> ProvisionerError:
    """Build the exception for a classified failure (``hint`` completes authentication errors)."""
    if klass is ErrorClass.QUOTA_EXCEEDED:
        return QuotaExceeded(message, code=code, status=status)
    if klass is ErrorClass.SKU_NOT_AVAILABLE:
        return SkuNotAvailable(message, code=code, status=status)
    if klass is ErrorClass.INVALID_PARAMETERS:
        return InvalidPoolParameters(message, code=code, status=status)
    if klass is ErrorClass.AUTHENTICATION:
        full = f"Azure authentication failed: {message}" + (f"; {hint}" if hint else "")
        return AuthenticationFailed(full, code=code, status=status)
    if klass is ErrorClass.NOT_FOUND:
        return PoolNotFound(message, code=code, status=status)
    if klass is ErrorClass.CONFLICT:
        return OperationInProgress(message, code=code, status=status, retry_after=retry_after)
    return RetryableArmError(message, code=code, status=status, retry_after=retry_after)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``x-ms-retry-after-ms`` or ``Retry-After``
    (delta-seconds or HTTP-date); None when absent or unparsable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for key in ("retry-after-ms", "x-ms-retry-after-ms"):
        if key in lowered:
            try:
                return max(0.0, float(lowered[key]) / 1000.0)
            except ValueError:
                pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
