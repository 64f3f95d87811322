from engines.stops import StopMatcher


def feed_all(matcher: StopMatcher, deltas: list[str]) -> list[str]:
    return [matcher.feed(d) for d in deltas]


def test_no_stops_passes_everything_through():
    matcher = StopMatcher(())
    assert feed_all(matcher, ["Hel", "lo", " wor", "ld"]) == ["Hel", "lo", " wor", "ld"]
    assert matcher.flush() == ""
    assert not matcher.stopped


def test_empty_stop_strings_are_ignored():
    matcher = StopMatcher(["", "END"])
    assert matcher.stops == ("END",)
    assert matcher.feed("plain") == "plain"


def test_stop_inside_one_delta_cuts_there():
    matcher = StopMatcher(["END"])
    assert matcher.feed("abcENDdef") == "abc"
    assert matcher.stopped
    assert matcher.feed("more") == ""
    assert matcher.flush() == ""


def test_stop_split_across_deltas_is_never_emitted():
    matcher = StopMatcher(["</s>"])
    out = feed_all(matcher, ["Hi <", "/", "s", "> trailing"])
    assert "".join(out) == "Hi "
    assert matcher.stopped
    # The partial "<" was held back, not emitted then retracted.
    assert out[0] == "Hi "


def test_held_back_prefix_is_released_when_it_turns_out_not_to_be_a_stop():
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("go ST") == "go "
    assert matcher.feed("OR") == "STOR"
    assert matcher.feed("E") == "E"
    assert not matcher.stopped


def test_flush_releases_a_trailing_partial_prefix():
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("almost STO") == "almost "
    assert matcher.flush() == "STO"
    assert matcher.flush() == ""  # released once only


def test_earliest_of_multiple_stops_wins():
    matcher = StopMatcher(["world", "lo"])
    assert matcher.feed("hello world") == "hel"
    assert matcher.stopped
    assert matcher.matched == "lo"  # what Anthropic's stop_sequence reports


def test_matched_is_none_until_a_stop_is_found_across_deltas():
    matcher = StopMatcher(["STOP", "END"])
    assert matcher.feed("go ST") == "go "
    assert matcher.matched is None
    assert matcher.feed("OP now") == ""
    assert matcher.matched == "STOP"


def test_multiple_stops_hold_back_longest_possible_prefix():
    matcher = StopMatcher(["ab", "xyz"])
    assert matcher.feed("1 xy") == "1 "
    assert matcher.feed("z tail") == ""
    assert matcher.stopped
    other = StopMatcher(["ab", "xyz"])
    assert other.feed("1 a") == "1 "
    assert other.feed("c") == "ac"
    assert not other.stopped
