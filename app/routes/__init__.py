"""HTTP route handlers, each built by a factory that receives its dependencies."""
