from cache import first_free


def test_the_first_free_slot_is_alpha():
    assert first_free({"alpha", "beta"}) == "alpha"
