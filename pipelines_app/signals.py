"""What the catalogue tells the run side, which it does not import (DESIGN.md, layering).

- `catalogue_changed`: a discovery was applied (after every scan, syncs included);
  `scan_record` is its DiscoveryScan. runs_app warms changed requirements.
- `checkouts_in_use`: asked before old git checkouts are removed; each receiver returns
  the commits that runs still use (a set of hex SHAs).
- `sync_finished`: a sync ended (`sync`, its Sync record: succeeded or failed). runs_app
  tells people when syncs start failing.
"""

from __future__ import annotations

from django.dispatch import Signal

catalogue_changed = Signal()
checkouts_in_use = Signal()
sync_finished = Signal()


def commits_in_use() -> set[str]:
    commits: set[str] = set()
    for _receiver, answer in checkouts_in_use.send(sender=None):
        commits |= set(answer or ())
    return commits
