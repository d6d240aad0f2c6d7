"""The application layer: every use case behind one authorization check, identifier grammar and error map.

Every front end (the in-process MemOS router, HTTP, MCP, MOS, the CLI, the web console) translates its
wire format to these calls and back; none of them imports the stores, the processors or the control
store. One place each for:

- ``service`` (``MemoryService``): the use cases (add, search, get, delete, export, import, feed, replay,
  forget), with ``access`` (users, keys, cubes, shares and the one ``authorize`` check), ``tasks`` (task
  status scoped to its user, submitting, waiting, handlers) and ``operations`` (lag, metrics feeds);
- ``models``: the typed requests and results; ``ids``: the identifier grammar; ``limits``: the bounds;
  ``errors``: the error-tree-to-status map; ``buckets``: the memory-type-to-bucket mapping;
- ``ports``: what the layer needs from the system below (the Runtime provides it; nothing here imports
  the composition root); ``handlers``: the task handlers every runtime installs.

Submodules are imported where used (``memos --help`` stays fast).
"""

__all__: list[str] = []
