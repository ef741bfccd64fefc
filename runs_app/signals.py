"""What the run side announces to itself, to code that cannot be imported where it happens
(the models are below everything that acts on them):

- `run_ended`: a run reached its final outcome — the last attempt, after any retry — in the
  transaction that ended it (`run`). Notifications listen.
- `run_started`: a person or a caller started a run (`run`, `by`, `via`, `parameters`: the
  names given, `rerun_of`); `run_cancelled`: one cancelled a run (`run`, `by`, `via`,
  `outcome`). The audit log listens (fastflow_site.receivers).
"""

from __future__ import annotations

from django.dispatch import Signal

run_ended = Signal()
run_started = Signal()
run_cancelled = Signal()
