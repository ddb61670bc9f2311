"""What an operator does from the terminal: ``bridge status``, ``held``, ``quarantine`` and
``target``; every action goes through ``bridge.ops``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from bridge import tenancy
from bridge.cli.options import config_option, run_service, tenant_option

if TYPE_CHECKING:
    from bridge.ops import Operations
    from bridge.ops.models import (
        Drift,
        DueGroup,
        OutboxView,
        RedisNode,
        ReportedBudget,
        Status,
    )

T = TypeVar("T")


def register(main: click.Group) -> None:
    for command in (status, held, quarantine, target):
        main.add_command(command)


def run_operation(config_path: str | None, tenant: str | None,
                  action: Callable[[Operations], Awaitable[T]]) -> T:
    """One action of ``bridge.ops`` on ``tenant``'s data and portals."""
    from bridge.ops import OperationError, Operations

    async def closing(ops: Operations) -> T:
        async with ops:
            return await action(ops)

    result: T = run_service(config_path, Operations, closing, OperationError, tenant)
    return result


@click.command()
@config_option
@tenant_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
def status(config_path: str | None, tenant: str | None, as_json: bool) -> None:
    """Queues, held syncs, quarantine and targets, in the terminal."""
    import orjson

    result = run_operation(config_path, tenant, lambda ops: ops.status())
    if as_json:  # the same JSON as GET /api/status
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo("\n".join(render_status(result, tenant)))


def render_status(status: Status, tenant: str | None = None) -> list[str]:
    """The terminal summary of ``bridge status``; for a tenant other than ``default`` it is
    named first, and the commands it suggests name it too."""
    also = f" --tenant {tenant}" if tenant and tenant != tenancy.DEFAULT else ""
    lines = [f"tenant {tenant}"] if also else []
    lines.append(f"groups known: {status.groups}   flush jobs queued: {status.queued_jobs}   "
                 f"workers alive: {len(status.workers)}")
    if status.inbox.events:
        lines.append(f"received, not yet folded by a worker: {status.inbox.events} event(s), "
                     f"the oldest for {(status.inbox.oldest_age_ms or 0) / 1000:.1f} s")
    if status.inbox.dead:
        lines.append(f"SET ASIDE {status.inbox.dead} event(s) the workers could not fold: "
                     f"bridge inbox dead list{also}")
    flushing = [d for d in status.due if d.flushing_until is not None]
    waiting = [d for d in status.due if d.flushing_until is None and d.in_ms > 0]
    due_now = len(status.due) - len(flushing) - len(waiting)
    lines.append(f"groups waiting: {len(waiting)}   due now: {due_now}   "
                 f"flushing: {len(flushing)}")
    for d in sorted(status.due, key=lambda d: (d.flushing_until is None, d.in_ms))[:10]:
        lines.append(f"  {d.group}: {_when(d)}")
    for name, target in status.targets.items():
        lines.append(f"target {name} ({target.kind}): {target.state}"
                     + (f"; last error: {target.last_error}" if target.last_error else ""))
        for ref, q in target.quarantined.items():
            where = f" ({q.field})" if q.field else ""
            lines.append(f"  QUARANTINED {ref} in {q.group}: {q.error_type}{where}: "
                         f"{q.message}")
        if target.outbox is not None:
            lines += render_outbox(target.outbox, status.now)
        lines += render_drift(target.drift, status.now)
    for change in status.held:  # once per group, whichever targets hold it
        lines += [f"HELD {change.group} on {', '.join(change.targets)}: {change.reason}",
                  f"  digest {change.digest}: bridge held release|discard --digest "
                  f"{change.digest}{also} {change.group}"]
        if change.deletions:
            lines.append(f"  would delete: {', '.join(change.deletions[:20])}")
    return lines + render_nodes(status.redis_nodes)


def render_nodes(nodes: list[RedisNode]) -> list[str]:
    """A Redis Cluster's nodes: role, reachable, memory, AOF, the slots and tenants each
    master serves (nothing on one Redis)."""
    if not nodes:
        return []
    lines = ["redis cluster:"]
    for node in nodes:
        state = "DOWN" if not node.reachable else ("FAILING" if node.failing else "up")
        what = (f"{node.slots} slots" + (f", tenant {', '.join(node.tenants)}"
                                         if node.tenants else "")
                if node.role == "master" else f"replica of {node.master or '?'}")
        aof = "" if node.aof_enabled is None else (
            f", AOF {'on' if node.aof_enabled else 'OFF'} ({node.aof_last_write_status})")
        memory = f", memory {node.used_memory_human}" if node.used_memory_human else ""
        lines.append(f"  {node.address} {node.role} {state}: {what}{memory}{aof}")
    return lines


def render_drift(drift: Drift, now: int, shown: int = 10) -> list[str]:
    """A target's periodic reconciliation: its last full pass and what it found."""
    from bridge.reconcile.compare import KINDS

    if not drift.interval_s:
        return ["  reconcile: off ([reconcile] interval_s = 0)"]
    last = drift.last_pass
    if last is None or last.finished is None:
        lines = [f"  reconcile: no full pass yet ({drift.checked} of {drift.groups} checked)"]
    else:
        found = ", ".join(f"{last.found[k]} {k}" for k in KINDS if last.found[k]) or "nothing"
        mended = ", ".join(f"{last.repaired[k]} {k}" for k in KINDS if last.repaired[k])
        lines = [f"  reconcile: last full pass {_since(now - last.finished)} ago: found {found}"
                 + (f"; repaired {mended}" if mended else "")]
    if drift.unknown_listings:
        lines.append(f"  UNKNOWN {drift.unknown_listings} listing(s) on the portal, never sent "
                     "there by the bridge (never touched):")
        lines += [f"    {u.ref} ({u.group or 'whole portal'}): {u.detail}"
                  for u in drift.unknown[:shown]]
    if drift.failing:
        lines.append(f"  CHECKS FAILING for {drift.failing} group(s)"
                     + "".join(f"; {f.group or 'whole portal'}: {f.error} ({f.attempts}x)"
                               for f in drift.failures[:3]))
    return lines


def render_outbox(outbox: OutboxView, now: int) -> list[str]:
    """A per-listing target's outbox, and its budgets as the portal last reported them."""
    waiting = f"{outbox.depth} waiting" if outbox.depth else "empty"
    if outbox.in_flight:
        waiting += f" ({outbox.in_flight} in the bulk request in flight)"
    if outbox.drain_s is None:
        drain = "bulk off (bulk_per_minute = 0)"
    elif outbox.depth:
        drain = (f"expected to drain in {_since(round(outbox.drain_s * 1000))} "
                 f"at {outbox.bulk_per_minute} bulk/min")
    else:
        drain = f"bulk at up to {outbox.bulk_per_minute}/min"
    budgets = "; ".join(_reported(name, b, now) for name, b in outbox.budgets.items())
    return [f"  outbox: {waiting}; {drain}", f"  portal budgets: {budgets}"]


def _reported(name: str, budget: ReportedBudget | None, now: int) -> str:
    if budget is None:
        return f"{name} not reported yet"
    text = f"{name} {_figure(budget.remaining)}/{_figure(budget.limit)}"
    if budget.resets_in_ms is not None:
        text += (f", resets in {_since(budget.resets_in_ms)}" if budget.resets_in_ms > 0
                 else ", window reset since")
    return text + f" (seen {_since(now - budget.at)} ago)"


def _figure(value: int | None) -> str:
    return "?" if value is None else str(value)


def _since(ms: int) -> str:
    seconds = max(ms, 0) / 1000
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _when(due: DueGroup) -> str:
    if due.flushing_until is not None:
        until = dt.datetime.fromtimestamp(due.flushing_until / 1000, dt.UTC)
        return (f"flushing, lease until {until:%H:%M:%S} UTC (renewed while the flush runs; "
                f"{max(due.in_ms, 0) / 1000:.1f}s left)")
    if due.in_ms <= 0:
        return "flush due now"
    return f"flush in {due.in_ms / 1000:.1f}s"


@click.group()
def held() -> None:
    """Syncs held by a guard: see what they would delete, then release or discard the one you
    reviewed."""


digest_option = click.option(
    "--digest", default=None,
    help="The digest of the held sync you reviewed (`bridge status` shows it); without it the "
         "held sync is shown and you are asked to confirm.")


def reviewed_digest(config_path: str | None, tenant: str | None, target: str | None, group: str,
                    digest: str | None, verb: str) -> str:
    """The digest the operator names, or the one they confirm after seeing the held change."""
    if digest:
        return digest
    held = run_operation(config_path, tenant, lambda ops: ops.held_sync(target, group))
    click.echo(f"held change of {group} on {', '.join(held.targets)} (digest {held.digest}): "
               f"{held.reason}")
    click.echo(f"it keeps {held.listings} listing(s) and would delete "
               f"{len(held.deletions)}: {', '.join(held.deletions) or 'none'}")
    for cause in held.causes:
        click.echo(f"  {cause['ref']}: {cause['cause']} ({cause['reason']})")
    click.confirm(f"{verb} this sync?", abort=True)
    return held.digest


target_option = click.option(
    "--target", default=None,
    help="Only this target's hold; by default every target holding the change.")


@held.command("release")
@config_option
@tenant_option
@target_option
@digest_option
@click.argument("group")
def held_release(config_path: str | None, tenant: str | None, target: str | None, group: str,
                 digest: str | None) -> None:
    """Send the held change of GROUP that you reviewed, deletions included."""
    digest = reviewed_digest(config_path, tenant, target, group, digest, "Release")
    entry = run_operation(config_path, tenant, lambda ops: ops.release(target, group, digest))
    click.echo(f"released {group} on {', '.join(entry.targets)}; it will delete: "
               f"{', '.join(entry.deletions) or 'nothing'}")


@held.command("discard")
@config_option
@tenant_option
@target_option
@digest_option
@click.argument("group")
def held_discard(config_path: str | None, tenant: str | None, target: str | None, group: str,
                 digest: str | None) -> None:
    """Do not send the deletions of GROUP's held change that you reviewed: every portal keeps
    those listings (once the group changes, its change is judged afresh)."""
    digest = reviewed_digest(config_path, tenant, target, group, digest, "Discard")
    entry = run_operation(config_path, tenant, lambda ops: ops.discard(target, group, digest))
    click.echo(f"discarded the held change of {group} on {', '.join(entry.targets)}")


@click.group()
def quarantine() -> None:
    """Listings a portal refused: retry them or discard them."""


quarantined_on = click.option("--target", required=True,
                              help="The target that refused the listings.")


@quarantine.command("retry")
@config_option
@tenant_option
@quarantined_on
@click.argument("refs", nargs=-1, required=True)
def quarantine_retry(config_path: str | None, tenant: str | None, target: str,
                     refs: tuple[str, ...]) -> None:
    """Send the listings REFS to the target again (once their data is fixed)."""
    count = run_operation(config_path, tenant, lambda ops: ops.retry(target, list(refs)))
    click.echo(f"{count} listing(s) will be sent to {target} again")


@quarantine.command("discard")
@config_option
@tenant_option
@quarantined_on
@click.argument("refs", nargs=-1, required=True)
def quarantine_discard(config_path: str | None, tenant: str | None, target: str,
                       refs: tuple[str, ...]) -> None:
    """Stop sending the listings REFS to the target until their content changes."""
    count = run_operation(config_path, tenant,
                          lambda ops: ops.discard_quarantined(target, list(refs)))
    click.echo(f"{count} listing(s) discarded for {target} (until their content changes)")


@click.group()
def target() -> None:
    """Pause or resume delivery to a target: changes accumulate while it is paused."""


@target.command("pause")
@config_option
@tenant_option
@click.argument("name")
def target_pause(config_path: str | None, tenant: str | None, name: str) -> None:
    """Stop delivery to the target NAME; its changes keep accumulating."""
    run_operation(config_path, tenant, lambda ops: ops.pause(name))
    click.echo(f"{name} paused; changes keep accumulating")


@target.command("resume")
@config_option
@tenant_option
@click.argument("name")
def target_resume(config_path: str | None, tenant: str | None, name: str) -> None:
    """Resume delivery to the target NAME; the changes waiting flow now."""
    run_operation(config_path, tenant, lambda ops: ops.resume(name))
    click.echo(f"{name} resumed; waiting changes flow now")
