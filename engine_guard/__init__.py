"""The engine guard: what stands between the worker and the Docker engine.

A small HTTP proxy (standard library only, so it runs anywhere) that passes on just the
Docker API calls runs need, and refuses — 403, with the reason — anything else, every
container-create that would weaken a run's confinement, and any call about a container
Fast-Flow did not make. `policy` decides; `server` carries the bytes. Run it with
`python -m engine_guard` (docs: docs/operating.md, "The engine guard").
"""
