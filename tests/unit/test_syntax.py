"""Names, image references and download URLs."""

from __future__ import annotations

import pytest

from kaito_operator.validation import syntax


@pytest.mark.parametrize(
    "url",
    [
        "https://huggingface.co/datasets/x/y/resolve/main/train.parquet",
        "http://data.example.com:8080/a.jsonl",
        "https://10.0.0.5/data.csv",  # private ranges are legitimate in-cluster stores
    ],
)
def test_download_urls_accepted(url):
    assert syntax.download_url(url) is None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("file:///etc/passwd", "http or https"),
        ("https:///nohost", "must name a host"),
        ("http://localhost:9000/x", "node itself"),
        ("http://api.localhost/x", "node itself"),
        ("http://127.1.2.3/x", "loopback"),
        ("http://0.0.0.0/x", "loopback"),
        ("http://[::ffff:127.0.0.1]/x", "loopback"),
        ("http://169.254.169.254/metadata/instance", "link-local"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://100.100.100.200/latest/meta-data", "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata service"),
        ("http://[fd00:ec2::254]/latest", "metadata"),
        ("http://[bad/x", "valid http(s) URL"),
    ],
)
def test_download_urls_refused(url, words):
    problem = syntax.download_url(url)
    assert problem is not None and words in problem


@pytest.mark.parametrize(
    "ref",
    [
        "nginx",
        "mcr.microsoft.com/aks/kaito/kaito-phi-3-mini-4k-instruct:0.0.1",
        "localhost:5000/adapters/a:1",
        "registry.io/a/b@sha256:" + "0" * 64,
    ],
)
def test_image_references_accepted(ref):
    assert syntax.image_reference(ref) is None


@pytest.mark.parametrize("ref", ["", "UPPER/x:1", "r.io/a:", "r.io//a:1", "r.io/a:tag with space"])
def test_image_references_refused(ref):
    assert syntax.image_reference(ref) is not None


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        ("myregistry.azurecr.io/adapters/a:0.1", True),
        ("localhost:5000/a:1", True),
        ("127.0.0.1:5000/a:1", True),
        ("adapters/a:1", False),
        ("myregistry.azurecr.io/a", False),
    ],
)
def test_push_references(ref, ok):
    assert (syntax.push_reference(ref) is None) is ok


def test_label_rules():
    assert syntax.label_key("kaito.sh/workspace") is None
    assert syntax.label_key("apps") is None
    assert syntax.label_key("Bad Prefix/x") is not None
    assert syntax.label_value("") is None
    assert syntax.label_value("x" * 64) is not None
