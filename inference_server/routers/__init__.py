"""HTTP routers; each is thin: parse (pydantic), call the service/scheduler, shape the answer."""
