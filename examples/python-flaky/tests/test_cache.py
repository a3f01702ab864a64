from cache import lookup


def test_lookup_returns_the_key_upper_cased():
    assert lookup("abc") == "ABC"
