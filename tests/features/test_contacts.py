from features.contacts import hash_email, hash_phone, redact_raw


def test_hash_is_keyed_and_normalized():
    assert hash_email("A@B.example", key=b"k1") == hash_email(" a@b.example ", key=b"k1")
    assert hash_email("a@b.example", key=b"k1") != hash_email("a@b.example", key=b"k2")
    assert hash_phone("+1 (555) 010-9999", key=b"k") == hash_phone("+15550109999", key=b"k")
    assert "a@b" not in hash_email("a@b.example", key=b"k")


def test_redaction_keeps_the_rest_of_the_record():
    raw = b'{"kind":"page_view","ids":{"email":"x@y.example","customer_id":"c1"},"t":"2026-03-02"}'
    redacted = redact_raw(raw)
    assert b"x@y.example" not in redacted
    assert b'"customer_id":"c1"' in redacted and b"2026-03-02" in redacted
