"""The workflow layer: one module per verb, each composing the stage rooms (extract, cache,
classify) into what the command line and a notebook call. It holds no numerics of its own; the
face (``cnncodes``) re-exports its names."""
