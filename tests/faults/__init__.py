"""The end-to-end fault suite (issue 8): the whole migration under a live simulated Honcho, with
faults injected by seed, checked by a continuous reader and a checker. See docs/faults.md."""
