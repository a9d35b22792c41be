"""The accounting part of DevDockSpawner (a mixin): each run of the server is a row in the hub's accounting
database (accounting.py), opened when the server answers and closed when it stops, with why."""

from __future__ import annotations

from traitlets import Int
from traitlets.config import LoggingConfigurable

from . import metrics
from .accounting import end_reason


class AccountingMixin(LoggingConfigurable):
    """Opens and closes this server's accounting row; the hub object adds the usage readings in between."""

    #: The accounting row of the current run (state: a restarted hub goes on with the same row; 0: none).
    accounting_id = Int(0).tag(state="run")

    def load_state(self, state):
        super().load_state(state)
        # The server runs on after a hub restart: its readings go on into the same row.
        if state.get("accounting_id"):
            self.devdock_hub.accounting_runs[self.server_key] = int(state["accounting_id"])

    def account_start(self, profile: str) -> None:
        """The server answers: its run begins (with the GPUs it holds)."""
        ledger = self.devdock_hub.ledger
        if ledger is None:
            return
        try:
            self.accounting_id = ledger.started(self.user.name, self.name or "", profile, list(self.gpu_ids))
        except Exception as e:  # noqa: BLE001 - the server runs without its row; the log says why
            self.log.error("devdock: no accounting row for %s: %s", self._log_name, e)
            return
        self.devdock_hub.accounting_runs[self.server_key] = self.accounting_id

    #: Who other than its owner stops the current run (an admin or a service; ""), told while the stop is under way
    _stopped_by = ""

    def stopped_by_other(self, requester: str) -> None:
        """An admin or a service is stopping this server (hub.log_request): its run ends as ``admin`` unless the
        culler said why."""
        self.log.info("devdock: %s is stopped by %s", self._log_name, requester)
        self._stopped_by = requester

    def account_end(self) -> None:
        """The server stopped (JupyterHub's clear_state): its run ends, with why (the culler's notice, if any)."""
        run_id, self.accounting_id = self.accounting_id, 0
        by, self._stopped_by = self._stopped_by, ""
        self.devdock_hub.accounting_runs.pop(self.server_key, None)
        ledger = self.devdock_hub.ledger if run_id else None
        if ledger is None:
            return
        reason = end_reason(self.stop_reason)
        try:
            row = ledger.ended(run_id, "admin" if by and reason == "stopped" else reason)
        except Exception as e:  # noqa: BLE001 - the stop goes on
            self.log.error("devdock: the accounting row of %s was not closed: %s", self._log_name, e)
            return
        if row and row["gpu_seconds_held"]:
            for group in sorted(self._groups()) or [""]:
                metrics.GPU_SECONDS_HELD.labels(group).inc(row["gpu_seconds_held"])
