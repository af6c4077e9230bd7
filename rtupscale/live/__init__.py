"""The live daemon, in parts passed in so that each can be tested with fakes: session,
worker, supervisor (recovery), reload (a pure plan), status. See docs/architecture.md."""
