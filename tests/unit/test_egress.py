"""Which addresses a document URL may lead to (``worker/egress.py``)."""

from __future__ import annotations

import pytest

from llmloom.worker.egress import Forbidden, check_url, networks, permitted


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared (carrier-grade NAT)
        "0.0.0.0",
        "::1",
        "fe80::1%eth0",
        "fd00::1",
        "::ffff:169.254.169.254",  # IPv4-mapped
        "224.0.0.1",
    ],
)
def test_addresses_no_public_document_lives_at_are_refused(address: str) -> None:
    assert not permitted(address, [])


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:84e5", "1.1.1.1"])
def test_public_addresses_are_fetched(address: str) -> None:
    assert permitted(address, [])


def test_an_allowed_network_opens_its_addresses_only() -> None:
    allowed = networks(["10.0.0.0/8", " 127.0.0.1 "])
    assert permitted("10.9.9.9", allowed) and permitted("127.0.0.1", allowed)
    assert not permitted("127.0.0.2", allowed) and not permitted("169.254.169.254", allowed)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/doc",
        "http://10.0.0.1/x",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http:///nohost",
    ],
)
def test_urls_that_lead_nowhere_public_are_refused_before_any_lookup(url: str) -> None:
    with pytest.raises(Forbidden):
        check_url(url, [])


def test_a_name_is_left_to_the_resolver() -> None:
    assert check_url("https://docs.example.com/a.txt", []) == "docs.example.com"
