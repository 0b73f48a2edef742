"""The closed loop: each NIC's steps, each checked through the guest agent before the next.

For every NIC of the plan the ladder (sidecar/core/verify.py) gives its steps. The first step of
every NIC runs (as the executor always did, one NIC after the other), then one agent read per poll
checks them all; a NIC the guest shows with its expected address is verified, one that stays stale
goes on to its next step, and a stale NIC after its last step has failed. With no agent answering,
a NIC ends unverified after its first step (the old open loop, said plainly). Bounded: every
ladder has at most two steps, and every wait its window.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from bridge_migration_contract import FixupAction
from sidecar.core.domain import Domain
from sidecar.core.models import InterfaceFixup, Outcome
from sidecar.core.plan import InterfacePlan
from sidecar.core.verify import CHANGED, Expected, Verdict, at_window_end, judge
from sidecar.fixer.executor import Executor
from sidecar.fixer.guestagent import AgentView
from sidecar.fixer.settings import FixerSettings

log = logging.getLogger(__name__)

_POLL_S = 0.25  # between two agent reads while waiting for the guest


@dataclass
class _Nic:
    plan: InterfacePlan
    steps: tuple[FixupAction, ...]
    expected: Expected
    record: InterfaceFixup | None = None
    index: int = 0  # the step being (or last) carried out
    outcome: Outcome | None = None
    verdict: Verdict | None = None
    verified_wall: float | None = None  # wall clock when the agent showed the expected address
    before: frozenset[str] | None = None  # what the NIC held before its first step (CHANGED only)

    @property
    def mac(self) -> str | None:
        """The MAC the NIC has after its last step."""
        return self.record.new_mac if self.record is not None else self.plan.current_mac

    def step_plan(self) -> InterfacePlan:
        action = self.steps[self.index]
        if action == self.plan.action:
            return self.plan
        reason = f"{self.plan.reason}; escalated: the guest was stale after {self.steps[self.index - 1]}"
        return dataclasses.replace(self.plan, action=action, reason=reason)


@dataclass(frozen=True)
class LoopResult:
    interfaces: list[InterfaceFixup]
    # Domain alias -> the step that verified, for NICs that escalated (what the next migration starts with).
    verified_at: dict[str, FixupAction] = field(default_factory=dict)


def _merge(nic: _Nic, step: InterfaceFixup) -> InterfaceFixup:
    if nic.record is None:
        return step
    return msgspec.structs.replace(
        step,
        action=nic.record.action,
        reason=nic.record.reason,
        old_mac=nic.record.old_mac,
        duration_ms=nic.record.duration_ms + step.duration_ms,
        steps=[*nic.record.steps, *step.steps],
    )


class ClosedLoop:
    def __init__(
        self,
        *,
        executor: Executor,
        settings: FixerSettings,
        read_agent: Callable[[Domain], AgentView],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._executor = executor
        self._settings = settings
        self._read_agent = read_agent
        self._clock = clock

    def run(
        self,
        dom: Domain,
        plans: Sequence[InterfacePlan],
        *,
        ladders: Mapping[str, tuple[FixupAction, ...]],
        expected: Mapping[str, Expected],
        resumed_at: float | None,
        trigger_time: float,
    ) -> LoopResult:
        """Carry out and check every plan; ``ladders`` and ``expected`` are by domain alias."""
        skipped = [self._executor.apply(dom, p) for p in plans if not ladders.get(p.alias)]
        nics = [_Nic(p, ladders[p.alias], expected.get(p.alias)) for p in plans if ladders.get(p.alias)]
        agent_gone: str | None = None
        if any(n.expected == CHANGED for n in nics):
            # Only for NICs expected to change: one read of the stale addresses before any step.
            view = self._read_agent(dom)
            if view.answered:
                for nic in nics:
                    nic.before = view.by_mac.get(nic.plan.current_mac or "", frozenset())
        active = list(nics)
        while active:
            for nic in active:
                step = self._executor.apply(dom, nic.step_plan(), resumed_at=resumed_at)
                nic.record = _merge(nic, step)
                if step.result != "done":
                    nic.outcome = "failed"
            stepped = [n for n in active if n.outcome is None]
            if agent_gone is None:
                agent_gone = self._verify(dom, stepped)
            for nic in stepped:
                if agent_gone is not None:
                    nic.outcome = "unverified"
                    nic.verdict = Verdict("unverifiable", f"no answer from the guest agent ({agent_gone})")
            active = self._escalating(stepped)
        done = [self._finish(n, trigger_time) for n in nics]
        verified_at = {n.plan.alias: n.steps[n.index] for n in nics if n.outcome == "verified"}
        by_alias = {r.alias: r for r in [*done, *skipped]}
        return LoopResult([by_alias[p.alias] for p in plans], verified_at)

    def _escalating(self, stepped: list[_Nic]) -> list[_Nic]:
        """NICs stale after a step that has a next one: they go on (the others end here)."""
        out = []
        for nic in stepped:
            if nic.outcome == "stale" and nic.index + 1 < len(nic.steps):
                log.warning(
                    "%s stale after %s (%s); next: %s",
                    nic.plan.alias,
                    nic.steps[nic.index],
                    nic.verdict.reason if nic.verdict else "",
                    nic.steps[nic.index + 1],
                )
                if nic.record is not None and nic.record.steps:
                    last = msgspec.structs.replace(nic.record.steps[-1], outcome="stale")
                    nic.record = msgspec.structs.replace(nic.record, steps=[*nic.record.steps[:-1], last])
                nic.index += 1
                nic.outcome = None
                out.append(nic)
            elif nic.outcome == "stale":
                nic.outcome = "failed"
        return out

    def _verify(self, dom: Domain, nics: list[_Nic]) -> str | None:
        """Ask the agent until every NIC is decided or its window is over; sets each NIC's outcome.
        Returns the agent's error when it did not answer (nobody can be verified then)."""
        if not nics:
            return None
        started = time.monotonic()
        windows = {
            id(n): self._settings.verify_window_s
            if n.steps[n.index] == "link-refresh"
            else self._settings.reattach_verify_window_s
            for n in nics
        }
        first: dict[int, frozenset[str] | None] = {}
        kept = {id(n): True for n in nics}
        pending = list(nics)
        for nic in nics:
            verdict = judge(expected=nic.expected, seen=None, before=nic.before)
            if verdict.judgement == "unverifiable":
                nic.outcome, nic.verdict = "unverified", verdict
        pending = [n for n in pending if n.outcome is None]
        while pending:
            view = self._read_agent(dom)
            if not view.answered:
                return view.error or "no answer"
            if not view.by_mac:
                # An agent that lists no interface at all cannot tell us anything (a guest whose
                # agent lacks the command, or filters it): unverified, not stale.
                return "the guest agent lists no interfaces"
            elapsed = time.monotonic() - started
            for nic in list(pending):
                seen = view.by_mac.get(nic.mac or "")
                key = id(nic)
                if key not in first:
                    first[key] = seen
                elif seen != first[key]:
                    kept[key] = False
                link_step = nic.steps[nic.index] == "link-refresh"
                kept_old = link_step and kept[key] and bool(seen) and elapsed >= self._settings.stale_after_s
                verdict = judge(expected=nic.expected, seen=seen, kept_old=kept_old, before=nic.before)
                if verdict.judgement == "pending" and elapsed >= windows[key]:
                    verdict = at_window_end(verdict, nic.expected)
                if verdict.judgement != "pending":
                    nic.verdict = verdict
                    nic.outcome = "verified" if verdict.judgement == "verified" else "stale"
                    if nic.outcome == "verified":
                        nic.verified_wall = self._clock()
                    pending.remove(nic)
            if pending:
                time.sleep(_POLL_S)
        return None

    def _finish(self, nic: _Nic, trigger_time: float) -> InterfaceFixup:
        assert nic.record is not None
        record = nic.record
        verdict = nic.verdict
        reason = verdict.reason if verdict is not None else (record.error or "the step failed")
        verified_ms = None
        if nic.verified_wall is not None:
            verified_ms = (nic.verified_wall - trigger_time) * 1000
        last = record.steps[-1] if record.steps else None
        if last is not None:
            last = msgspec.structs.replace(last, outcome=nic.outcome)
        steps = [*record.steps[:-1], last] if last is not None else record.steps
        if nic.outcome == "failed" and verdict is not None and verdict.judgement == "stale":
            reason = f"still stale after {', '.join(nic.steps)}: {verdict.reason}"
        log.log(
            logging.ERROR if nic.outcome == "failed" else logging.INFO,
            "%s %s after %s: %s",
            nic.plan.alias,
            nic.outcome,
            " -> ".join(nic.steps[: nic.index + 1]),
            reason,
        )
        return msgspec.structs.replace(
            record,
            outcome=nic.outcome,
            outcome_reason=reason,
            verified_ms=verified_ms,
            address=verdict.address if verdict is not None else None,
            steps=steps,
        )
