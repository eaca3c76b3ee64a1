"""The serving side of a node: the listener (accept, per-address shares, TLS, frames), the pure
connection policy it drives, and the request pipeline every request goes through.

    firmware/serve/listener.py      Listener (accept, TLS, frames: the driver)
    firmware/serve/accepting.py     bind_tcp, taking queued connections, refusing with a reset
    firmware/serve/reclaim.py       a closed connection's memory back at once
    firmware/serve/conn_table.py    who may hold a connection slot (pure)
    firmware/serve/conn_policy.py   one connection's deadlines (pure)
    firmware/serve/pipeline.py      rate limit -> parse -> authenticate -> admit -> make room
                                    -> replicate | write -> answer
    firmware/serve/storage_ops.py   the storage RPC's effect on this node's store
"""
