"""Replay of real device messages through a real Mosquitto and the real bridge process, on
PostgreSQL, under conditions that must give the same figures: live, a backlog of 10,000
messages queued while the bridge was down, a bridge killed in mid-job, and a bridge dead
between a commit and its acknowledgement.

`scenario.py` is the city and its messages, with every expected figure derived by hand;
`test_replay.py` runs it. The messages come from `tests/fixtures/devices/` (each family's
SOURCE.md says where from). About half a minute per condition.
"""
