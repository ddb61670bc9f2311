"""The ``bridge`` command line (contract section 5): one module per command family.

``processes`` (serve, worker, sandbox), ``dev`` (dev, send), ``operate`` (status, held,
quarantine, target), ``inbox`` (events set aside), ``reconcile``, ``trace`` (a listing's
story), ``link`` (external-ID linking) and ``tenants`` (tenant list, purge); ``options`` holds
what they share, ``--tenant`` among it: every command on one tenant's data or portals takes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import click

from bridge import logs
from bridge.cli import dev, inbox, link, operate, processes, reconcile, tenants, trace
from bridge.cli.options import verbose_option


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """listing-bridge: keeps property portals in step with the agency's CRM.

    One deployment may serve several agencies (tenants): a command that works on one agency's
    data or portals takes --tenant NAME (default: default); `bridge tenant list` names them.
    """
    logs.configure("text", logging.DEBUG if verbose else logging.INFO)


for family in (processes, dev, operate, inbox, reconcile, trace, tenants):
    family.register(main)
main.add_command(link.link)


def _commands(group: click.Group) -> Iterator[click.Command]:
    for command in group.commands.values():
        if isinstance(command, click.Group):
            yield from _commands(command)
        else:
            yield command


for _command in _commands(main):
    verbose_option(_command)  # every command, its families' modules unchanged

__all__ = ["main"]
