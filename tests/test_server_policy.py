"""The access policy as pure decisions on a loaded state, at given times."""

from __future__ import annotations

import dataclasses

from censusdrop.server.accounts import Account
from censusdrop.server.policy import AccessState
from censusdrop.server.revocations import Revocation
from censusdrop.server.roundmodel import Entry
from censusdrop.server.roundmodel import Round
from roundkit import AFTER
from roundkit import BEFORE
from roundkit import ENSHI
from roundkit import REVIEW
from roundkit import REVIEWING
from roundkit import SUBMISSION
from roundkit import SUBMITTING
from roundkit import WUHAN
from roundkit import YICHANG
from roundkit import china


def _round(*entries: Entry, name: str = "2020-hubei") -> Round:
    return Round(1, name, BEFORE, SUBMISSION, REVIEW, entries)


def _entry(prefecture: str, state: str = "not_submitted", **more: object) -> Entry:
    return Entry(prefecture, state, BEFORE, **more)  # type: ignore[arg-type]


def _reviewer(*assigned: str, name: str = "expert") -> Account:
    return Account(1, name, "reviewer", None, False, 0, None, (), BEFORE, assigned)


def test_without_rounds_prefectures_write_and_reviewers_read_as_before() -> None:
    state = AccessState()
    assert state.write_refusal(WUHAN, AFTER) is None
    assert state.reviewer_refusal(_reviewer(WUHAN), AFTER) is None
    assert state.can_see(_reviewer(WUHAN), WUHAN, AFTER)
    assert not state.can_see(_reviewer(WUHAN), ENSHI, AFTER)


def test_a_prefecture_writes_only_inside_its_submission_window() -> None:
    state = AccessState((_round(_entry(WUHAN)),))
    assert "提交期尚未开始" in (state.write_refusal(WUHAN, BEFORE) or "")
    assert "2020年4月23日 00:00至2020年5月10日24时" in (
        state.write_refusal(WUHAN, BEFORE) or ""
    )
    assert state.write_refusal(WUHAN, SUBMITTING) is None
    assert "提交期已于2020年5月10日24时截止" in (
        state.write_refusal(WUHAN, REVIEWING) or ""
    )


def test_a_distributed_prefecture_writes_only_while_rectifying() -> None:
    distributed = AccessState((_round(_entry(WUHAN, "distributed")),))
    assert "整改期内方可上传" in (distributed.write_refusal(WUHAN, SUBMITTING) or "")
    rectifying = AccessState(
        (_round(_entry(WUHAN, "rectification", rectify_until=china(2020, 7, 1))),)
    )
    assert rectifying.write_refusal(WUHAN, china(2020, 6, 30, 23, 59)) is None
    late = rectifying.write_refusal(WUHAN, AFTER) or ""
    assert "整改期已于2020年6月30日24时截止" in late


def test_a_prefecture_outside_every_round_is_read_only() -> None:
    state = AccessState((_round(_entry(WUHAN)),))
    assert "未列入验收批次" in (state.write_refusal(ENSHI, SUBMITTING) or "")


def test_a_reviewer_sees_only_assigned_distributed_prefectures_in_the_window() -> None:
    state = AccessState(
        (
            _round(
                _entry(WUHAN, "distributed"),
                _entry(ENSHI, "prereviewed"),
                _entry(YICHANG, "distributed"),
            ),
        )
    )
    expert = _reviewer(WUHAN, ENSHI)
    assert state.can_see(expert, WUHAN, REVIEWING)
    assert not state.can_see(expert, ENSHI, REVIEWING)  # not distributed
    assert not state.can_see(expert, YICHANG, REVIEWING)  # not assigned
    assert not state.can_see(expert, WUHAN, AFTER)  # window over
    assert not state.can_see(expert, WUHAN, SUBMITTING)  # not yet begun


def test_a_reviewer_may_connect_only_during_the_review_window() -> None:
    state = AccessState((_round(_entry(WUHAN, "distributed")),))
    assert state.reviewer_refusal(_reviewer(WUHAN), REVIEWING) is None
    for at in (SUBMITTING, AFTER):
        refusal = state.reviewer_refusal(_reviewer(WUHAN), at)
        assert refusal is not None and refusal.rule == "outside_review_window"
    unrelated = state.reviewer_refusal(_reviewer(ENSHI), REVIEWING)
    assert unrelated is not None and unrelated.rule == "outside_review_window"


def test_a_revoked_reviewer_sees_nothing_even_without_rounds() -> None:
    revoked = {"expert": Revocation("expert", BEFORE, "admin", "done")}
    for rounds in ((), (_round(_entry(WUHAN, "distributed")),)):
        state = AccessState(rounds, revoked)
        refusal = state.reviewer_refusal(_reviewer(WUHAN), REVIEWING)
        assert refusal is not None and refusal.rule == "revoked"
        assert not state.can_see(_reviewer(WUHAN), WUHAN, REVIEWING)
    other = AccessState((), revoked)
    assert other.reviewer_refusal(_reviewer(WUHAN, name="other"), REVIEWING) is None


def test_any_round_with_an_open_window_lets_a_prefecture_write() -> None:
    closed = dataclasses.replace(_round(_entry(WUHAN)), id=1, name="old")
    reopened = Round(2, "again", BEFORE, REVIEW, None, (_entry(WUHAN),))
    state = AccessState((closed, reopened))
    assert state.write_refusal(WUHAN, REVIEWING) is None
