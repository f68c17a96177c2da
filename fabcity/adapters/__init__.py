"""Device adapters: what machines already publish, turned into fabcity events.

One module per source, each a pure `decode(message, device, state) -> Decoded`; `routing`
says which registered device a topic belongs to and `intake` runs it in a transaction.
"""
