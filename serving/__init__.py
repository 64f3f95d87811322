"""Getting a request to an engine host and back: routes, dispatch, the wire protocol, limits,
the request lifecycle and the worker. Protocol-neutral: api/ speaks the protocols."""
