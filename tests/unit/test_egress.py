"""The egress policy (every spelling of a forbidden host), the guard's resolve-once-and-pin
rule, and the transfer bounds, without any network: resolvers and clocks are injected."""

from __future__ import annotations

import gzip
import io
import ipaddress
import zlib

import pytest

from kaito_egress.guard import EgressGuard, EgressRefused, ResolutionFailed
from kaito_egress.limits import (
    Budget,
    ContentError,
    Deadline,
    LimitExceeded,
    RateFloor,
    TransferLimits,
    copy_bounded,
    inflate_file,
)
from kaito_egress.policy import (
    HostError,
    Policy,
    address_refusal,
    is_literal_loopback,
    normalize_host,
    parse_ipv4,
    url_refusal,
)

# URL → words the refusal must hold (default policy: loopback and private refused).
REFUSED = {
    "http://127.0.0.1/": "loopback",
    "http://127.1/": "127.0.0.1 is a loopback",
    "http://0x7f.1/": "127.0.0.1 is a loopback",
    "http://0x7f000001/": "127.0.0.1 is a loopback",
    "http://017700000001/": "127.0.0.1 is a loopback",
    "http://2130706433/": "127.0.0.1 is a loopback",
    "http://0251.0376.0251.0376/": "169.254.169.254 is a cloud metadata",
    "http://169.254.43518/": "169.254.169.254 is a cloud metadata",
    "http://0xa9fea9fe/": "169.254.169.254 is a cloud metadata",
    "http://169.254.1.1/": "link-local",
    "http://100.100.100.200/": "cloud metadata",
    "http://168.63.129.16/": "cloud metadata",
    "http://[fd00:ec2::254]/": "cloud metadata",
    "http://0.0.0.0/": "unspecified",
    "http://0/": "unspecified",
    "http://[::]/": "unspecified",
    "http://[::1]/": "loopback",
    "http://[fe80::1]/": "link-local",
    "http://224.0.0.251/": "multicast",
    "http://[ff02::1]/": "multicast",
    "http://240.0.0.1/": "reserved",
    "http://255.255.255.255/": "reserved",
    "http://192.0.2.10/": "reserved",
    "http://[2001:db8::1]/": "reserved",
    "http://[fec0::1]/": "site-local",
    "http://10.1.2.3/": "private range",
    "http://172.16.0.1/": "private range",
    "http://192.168.0.1/": "private range",
    "http://100.64.0.1/": "private range",
    "http://[fc00::1]/": "private range",
    "http://[fd12:3456::1]/": "private range",
    "http://[::ffff:127.0.0.1]/": "IPv4-mapped",
    "http://[::ffff:169.254.169.254]/": "IPv4-mapped",
    "http://[::127.0.0.1]/": "IPv4-compatible",
    "http://[64:ff9b::7f00:1]/": "NAT64",
    "http://[64:ff9b::a9fe:a9fe]/": "NAT64",
    "http://[64:ff9b:1::1]/": "local-use NAT64",
    "http://[2002:a9fe:a9fe::1]/": "6to4",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/": "Teredo",
    "http://localhost/": "node itself",
    "http://localhost./": "node itself",
    "http://LOCALHOST:8080/": "node itself",
    "http://api.localhost/": "node itself",
    "http://x.y.localhost./": "node itself",
    "http://ｌｏｃａｌｈｏｓｔ/": "node itself",
    "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/": "node itself",
    "http://localhost\u3002/": "node itself",
    "http://１２７.０.０.１/": "loopback",
    "http://%31%32%37.0.0.1/": "loopback",
    "http://%6c%6f%63%61%6c%68%6f%73%74/": "node itself",
    "http://metadata.google.internal/": "metadata service",
    "http://metadata.google.internal./": "metadata service",
    "http://METADATA/": "metadata service",
    "http://instance-data.ec2.internal/": "metadata service",
    "http://good@127.0.0.1/": "credentials",
    "http://good:pw@data.example/": "credentials",
    "http://1.2.3.4.5/": "ends in a number",
    "http://foo.127/": "ends in a number",
    "http://08.1/": "ends in a number",
    "http://256.1.1.1/": "out of the IPv4 range",
    "http://[::1%25eth0]/": "zone identifiers",
    "http://a..b/": "empty label",
    "http://exa_mple.com!/": "characters",
    "http://[bad/x": "valid http(s) URL",
    "http://host:99999/": "valid http(s) URL",
    "http://a b/": "spaces",
    "http://a\\b/": "backslashes",
    "file:///etc/passwd": "http or https",
    "gopher://data.example/": "http or https",
    "https:///nohost": "must name a host",
}

ACCEPTED = [
    "https://huggingface.co/datasets/x/resolve/main/train.parquet",
    "http://data.example.com:8080/a.jsonl",
    "http://127.evil.example:5000/x",  # a name: decided by what it resolves to
    "https://bücher.example/x",  # IDNA
    "http://93.184.216.34/",
    "http://[2606:4700::1111]/",
    "http://[2002:5db8:d822::1]/",  # 6to4 of a public address
]


@pytest.mark.parametrize("url", sorted(REFUSED))
def test_refused_spellings(url: str):
    why = url_refusal(url)
    assert why is not None and REFUSED[url] in why, why


@pytest.mark.parametrize("url", ACCEPTED)
def test_accepted_urls(url: str):
    assert url_refusal(url) is None


def test_private_ranges_are_configurable():
    allow = Policy(allow_private=True)
    assert url_refusal("http://10.1.2.3/", allow) is None
    assert url_refusal("http://[fd12::1]/", allow) is None
    assert "metadata" in url_refusal("http://100.100.100.200/", allow)  # CGNAT, but metadata
    assert "metadata" in url_refusal("http://[fd00:ec2::254]/", allow)  # ULA, but metadata


def test_loopback_is_allowed_only_for_canonical_literals():
    allow = Policy(allow_loopback=True)
    assert url_refusal("http://127.0.0.1:5000/", allow) is None
    assert url_refusal("http://[::1]:5000/", allow) is None
    for url in ("http://127.1/", "http://0x7f.1/", "http://2130706433/", "http://localhost/",
                "http://[::ffff:127.0.0.1]/", "http://[64:ff9b::7f00:1]/"):
        assert url_refusal(url, allow) is not None, url
    address = ipaddress.ip_address("127.0.0.1")
    assert address_refusal(address, allow) is not None  # a resolved name is never a literal
    assert address_refusal(address, allow, literal=True) is None


@pytest.mark.parametrize("hostport, expected", [
    ("127.0.0.1:5000", True), ("[::1]:5000", True), ("127.0.0.1", True),
    ("127.evil.example:5000", False), ("127.evil.example", False), ("localhost:5000", False),
    ("127.1:5000", False), ("0x7f.1:5000", False), ("[::ffff:127.0.0.1]:5000", False),
    ("myregistry.azurecr.io", False), ("10.0.0.1:5000", False),
])
def test_is_literal_loopback(hostport: str, expected: bool):
    assert is_literal_loopback(hostport) is expected


@pytest.mark.parametrize("text, expected", [
    ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("169.254.43518", "169.254.169.254"), ("2130706433", "127.0.0.1"), ("0x7f.0.1", "127.0.0.1"),
    ("10.0x10.1", "10.16.0.1"), ("0", "0.0.0.0"), ("example.com", None),
])
def test_parse_ipv4_reads_inet_aton_forms(text: str, expected: str | None):
    parsed = parse_ipv4(text)
    assert (str(parsed) if parsed else None) == expected


def test_normalize_host_folds_unicode_and_dots():
    assert normalize_host("ＥＸＡＭＰＬＥ．com.").name == "example.com"
    assert normalize_host("bücher.example").name == "xn--bcher-kva.example"
    with pytest.raises(HostError):
        normalize_host("")


class FakeDNS:
    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers, self.calls = answers, []

    def __call__(self, name: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        self.calls.append(name)
        queue = self.answers.get(name)
        if not queue:
            raise ResolutionFailed(f"cannot resolve {name}")
        return [ipaddress.ip_address(a) for a in (queue.pop(0) if len(queue) > 1 else queue[0])]


def test_guard_checks_every_record_and_pins_the_answer():
    dns = FakeDNS({"ok.example": [["93.184.216.34", "2606:4700::1"], ["127.0.0.1"]],
                   "mixed.example": [["93.184.216.34", "10.0.0.1"]],
                   "v6.example": [["2606:4700::1", "fe80::1"]]})
    guard = EgressGuard(resolver=dns)
    first = guard.addresses("ok.example", 443)
    assert [str(a) for a in first] == ["93.184.216.34", "2606:4700::1"]
    assert guard.addresses("OK.EXAMPLE.", 443) == first  # same name, pinned: no second lookup
    assert dns.calls == ["ok.example"]
    with pytest.raises(EgressRefused, match="mixed.example, which resolves to 10.0.0.1: .*private"):
        guard.addresses("mixed.example", 80)
    with pytest.raises(EgressRefused, match="fe80::1 is a link-local"):
        guard.addresses("v6.example", 80)
    with pytest.raises(ResolutionFailed):
        guard.addresses("nowhere.example", 80)
    with pytest.raises(EgressRefused, match="loopback"):
        guard.addresses("127.0.0.1", 80)


def test_guard_dials_only_checked_addresses():
    dialled = []

    def dialer(address, port):
        dialled.append(str(address))
        raise OSError("simulated: no route")

    guard = EgressGuard(resolver=FakeDNS({"a.example": [["93.184.216.34", "93.184.216.35"]]}),
                        dialer=lambda a, p: (dialled.append(str(a)), ("192.0.2.1", 9))[1])
    assert guard.targets("a.example", 80) == [("192.0.2.1", 9), ("192.0.2.1", 9)]
    assert dialled == ["93.184.216.34", "93.184.216.35"]
    refusing = EgressGuard(resolver=FakeDNS({"b.example": [["93.184.216.34"]]}), dialer=dialer)
    dialled.clear()
    with pytest.raises(OSError, match="no route"):
        refusing.connect("b.example", 80, 1.0)
    assert dialled == ["93.184.216.34"]


def test_guard_from_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KAITO_EGRESS_ALLOW_LOOPBACK", raising=False)
    monkeypatch.delenv("KAITO_EGRESS_ALLOW_PRIVATE", raising=False)
    assert EgressGuard.from_env().policy == Policy()
    monkeypatch.setenv("KAITO_EGRESS_ALLOW_LOOPBACK", "1")
    monkeypatch.setenv("KAITO_EGRESS_ALLOW_PRIVATE", "true")
    assert EgressGuard.from_env().policy == Policy(allow_private=True, allow_loopback=True)
    assert EgressGuard.from_env(allow_private=False).policy.allow_private is False


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_deadline_and_rate_floor_with_a_fake_clock():
    clock = Clock()
    deadline = Deadline(10, "the pull", clock=clock)
    clock.now = 9.9
    deadline.check()
    assert deadline.remaining() == pytest.approx(0.1)
    clock.now = 10.0
    with pytest.raises(LimitExceeded, match="the pull did not finish within the 10 s deadline"):
        deadline.check()
    clock.now = 0.0
    rate = RateFloor(100, 5, "blob x", clock=clock)
    for second in range(1, 6):  # 1 byte/s: a trickle
        clock.now = float(second)
        if second < 5:
            rate.update(1)
    with pytest.raises(LimitExceeded, match="blob x stalled"):
        rate.update(1)


LIMITS = TransferLimits(deadline_s=60, max_file_bytes=10 << 20, max_total_bytes=12 << 20)


def _copy(chunks, *, encoding="identity", declared=None, limits=LIMITS, budget=None):
    out = io.BytesIO()
    n = copy_bounded(iter(chunks), out, limits=limits, what="file x",
                     deadline=Deadline(60, "x"), budget=budget or Budget(limits.max_total_bytes, "files"),
                     encoding=encoding, declared=declared)
    return n, out.getvalue()


def test_copy_bounded_decodes_within_caps():
    data = b"row\n" * 10_000
    assert _copy([gzip.compress(data)], encoding="gzip") == (len(data), data)
    deflated = zlib.compress(data)
    assert _copy([deflated[:10], deflated[10:]], encoding="deflate") == (len(data), data)
    assert _copy([b"abc"], declared=3) == (3, b"abc")


@pytest.mark.parametrize("chunks, kwargs, error, words", [
    ([b"x" * (11 << 20)], {}, LimitExceeded, "per-file cap of 10 MiB"),
    ([gzip.compress(b"\0" * (20 << 20))], {"encoding": "gzip"}, LimitExceeded, "expands more than 50x"),
    ([gzip.compress(b"a" * 100)[:-8]], {"encoding": "gzip"}, ContentError, "truncated"),
    ([b"\x1f\x8b\x08\x00" + b"\xff" * 40], {"encoding": "gzip"}, ContentError, "corrupt gzip"),
    ([gzip.compress(b"a") + b"junk"], {"encoding": "gzip"}, ContentError, "after the end"),
    ([b"x"], {"encoding": "br"}, ContentError, "unsupported Content-Encoding"),
    ([b"x" * 10], {"declared": 5}, ContentError, "more than the 5 bytes it declared"),
    ([b"x" * 3], {"declared": 5}, ContentError, "after 3 of its 5 declared bytes"),
])
def test_copy_bounded_refuses(chunks, kwargs, error, words):
    with pytest.raises(error, match=words):
        _copy(chunks, **kwargs)


def test_total_budget_spans_files():
    budget = Budget(12 << 20, "the files")
    _copy([b"x" * (8 << 20)], budget=budget)
    with pytest.raises(LimitExceeded, match="the files exceed the total cap of 12 MiB"):
        _copy([b"x" * (8 << 20)], budget=budget)


def test_inflate_file_is_bounded():
    src = io.BytesIO(gzip.compress(b"\0" * (30 << 20)))
    with pytest.raises(LimitExceeded, match="expands more than 50x"):
        inflate_file(src, io.BytesIO(), limits=LIMITS, what="layer", deadline=Deadline(60, "x"),
                     budget=Budget(1 << 40, "layers"))
    ok = io.BytesIO()
    inflate_file(io.BytesIO(gzip.compress(b"tar" * 1000)), ok, limits=LIMITS, what="layer",
                 deadline=Deadline(60, "x"), budget=Budget(1 << 40, "layers"))
    assert ok.getvalue() == b"tar" * 1000
