"""Part 5: ComfyUI's /interrupt and the gate's cancel at random moments, before, during and after a pause.

Each round queues a gated prompt and fires one storm action at it. Whatever the action, the prompt must end
(success or interrupted, as the API promises for that action), no pause may be left behind, and the next
prompt must run. A pause that outlives its action (ComfyUI forgets an /interrupt sent before the prompt
starts) is chosen, as a person would.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

from .harness import PartResult, gated_prompt, history_status, proc_status, timed, wait_finished, wait_pause_or_done

ACTIONS = [
    "interrupt before the pause",
    "interrupt at a random moment",
    "interrupt during the pause",
    "interrupt right after a choice",
    "cancel during the pause",
    "cancel right after a choice",
    "stale cancel before the pause",
    "cancel and interrupt together",
    "choose and cancel race",
]


def _interrupt(server) -> None:
    server.request("POST", "/interrupt", {})


def _cancel(server, token: str) -> int:
    return server.post_json("/datasete_gate/cancel", {"token": token})[0]


def _choose(server, token: str) -> int:
    return server.post_json("/datasete_gate/choose", {"token": token, "route": 1})[0]


def _wait_for_pause(server, prompt_id: str, timeout: float = 30.0) -> dict | None:
    entry, _ = wait_pause_or_done(server, prompt_id, timeout)
    return entry


def storm_round(server, action: str, rng: random.Random, stale_token: str | None) -> dict:
    """Fire one action; returns what happened: outcome, answers, whether a pause outlived it, the token."""
    prompt_id = server.queue(gated_prompt(color=rng.randint(0, 0xFFFFFF)))
    answers: dict = {}
    token = None
    if action == "interrupt before the pause":
        _interrupt(server)
    elif action == "interrupt at a random moment":
        time.sleep(rng.uniform(0, 0.3))
        _interrupt(server)
    elif action == "stale cancel before the pause":
        answers["cancel"] = _cancel(server, stale_token or "never-issued")
    else:
        entry = _wait_for_pause(server, prompt_id)
        if entry is None:
            return {"prompt_id": prompt_id, "outcome": "ended before pausing", "answers": answers, "token": None,
                    "outlived": False}
        token = entry["token"]
        if action == "interrupt during the pause":
            time.sleep(rng.uniform(0, 0.2))
            _interrupt(server)
        elif action == "interrupt right after a choice":
            answers["choose"] = _choose(server, token)
            _interrupt(server)
        elif action == "cancel during the pause":
            time.sleep(rng.uniform(0, 0.2))
            answers["cancel"] = _cancel(server, token)
        elif action == "cancel right after a choice":
            answers["choose"] = _choose(server, token)
            answers["cancel"] = _cancel(server, token)
        elif action in ("cancel and interrupt together", "choose and cancel race"):
            def cancel():
                answers["cancel"] = _cancel(server, token)

            def other():
                if action == "cancel and interrupt together":
                    _interrupt(server)
                else:
                    answers["choose"] = _choose(server, token)

            threads = [threading.Thread(target=cancel), threading.Thread(target=other)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    # Whatever the action left: a pause still waiting is chosen, as a person would.
    outlived = False
    deadline = time.monotonic() + 30
    history = None
    while time.monotonic() < deadline:
        history = server.history(prompt_id)
        if history_status(history):
            break
        for entry in server.pending():
            if entry["prompt_id"] == prompt_id:
                outlived = True
                token = entry["token"]
                _choose(server, token)
        time.sleep(0.02)
    return {"prompt_id": prompt_id, "outcome": history_status(history) or "stuck", "answers": answers,
            "token": token, "outlived": outlived}


def promised(action: str, round_result: dict) -> bool:
    """Does the outcome match what the API promises for this action?"""
    outcome, answers, outlived = round_result["outcome"], round_result["answers"], round_result["outlived"]
    if outcome not in ("success", "interrupted"):
        return False
    if action == "interrupt before the pause":
        return outcome == "interrupted" or (outlived and outcome == "success")
    if action == "interrupt at a random moment":
        return outcome == "interrupted" or (outlived and outcome == "success")
    if action == "interrupt during the pause":
        return outcome == "interrupted"
    if action == "interrupt right after a choice":
        return answers.get("choose") == 200  # the run may end either way: the interrupt may hit a later node
    if action == "cancel during the pause":
        return answers.get("cancel") == 200 and outcome == "interrupted"
    if action == "cancel right after a choice":
        return answers.get("choose") == 200 and answers.get("cancel") == 409 and outcome == "success"
    if action == "stale cancel before the pause":
        return answers.get("cancel") in (404, 409) and outlived and outcome == "success"
    if action == "cancel and interrupt together":
        return outcome == "interrupted" and answers.get("cancel") in (200, 409)
    if action == "choose and cancel race":
        won = sorted([answers.get("choose"), answers.get("cancel")])
        if won != [200, 409]:
            return False
        return outcome == ("success" if answers["choose"] == 200 else "interrupted")
    return False


def run(server, *, rounds: int, seed_value: int = 5) -> PartResult:
    result = PartResult("5", "Cancel storms")
    rng = random.Random(seed_value)
    per_action: Counter = Counter()
    outcomes: Counter = Counter()
    broken_promises = 0
    stuck = 0
    not_run = 0
    leftover_pauses = 0
    outlived = 0
    with timed(result):
        threads_before = proc_status(server.process.pid)["Threads"]
        stale = None
        for index in range(rounds):
            action = ACTIONS[index % len(ACTIONS)] if index < len(ACTIONS) else rng.choice(ACTIONS)
            per_action[action] += 1
            round_result = storm_round(server, action, rng, stale)
            outcomes[round_result["outcome"]] += 1
            if round_result["outcome"] == "stuck":
                stuck += 1
                result.note(f"round {index} ({action}): the prompt never ended: {server.log_tail(5)}")
            elif round_result["outcome"] == "ended before pausing":
                not_run += 1
                result.note(f"round {index} ({action}): the prompt ended without its gate pausing")
            if not promised(action, round_result):
                broken_promises += 1
                result.note(f"round {index} ({action}): {round_result}")
            outlived += round_result["outlived"]
            stale = round_result["token"] or stale
            if _leftover_pauses(server):
                leftover_pauses += 1
                result.note(f"round {index} ({action}): a pause was left waiting: {server.pending()}")
        # The control: after the storm, a plain gated prompt pauses, takes a choice and succeeds.
        prompt_id = server.queue(gated_prompt())
        entry = _wait_for_pause(server, prompt_id)
        control = "did not pause"
        if entry is not None:
            _choose(server, entry["token"])
            control = history_status(wait_finished(server, prompt_id, 30)) or "stuck"
        threads_after = proc_status(server.process.pid)["Threads"]
    result.stated("rounds per action", ", ".join(f"{a}: {n}" for a, n in per_action.items()))
    result.at_least("storm rounds", rounds, rounds)
    result.stated("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    result.stated("pauses that outlived their action (chosen to finish; ComfyUI forgets an early /interrupt)",
                  outlived)
    result.at_most("stuck workers (a prompt that never ended)", stuck, 0)
    result.at_most("prompts that did not run after the previous storm", not_run, 0)
    result.at_most("outcomes other than the API promises", broken_promises, 0)
    result.at_most("pauses left waiting after a round", leftover_pauses, 0)
    result.equal("control prompt after the storm", control, "success")
    result.stated("server threads before / after", f"{threads_before} / {threads_after}")
    return result


def _leftover_pauses(server) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if not server.pending() and server.queue_remaining() == 0:
            return False
        time.sleep(0.02)
    return True
