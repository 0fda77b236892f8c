"""The training runtime: what runs in the head and worker pods, and in `rljob run` on one machine.

Modules split pure decisions (argument parsing, stop criteria, sizing, progress payloads, command
lines) from the thin parts that touch Ray, processes and the network, so the decisions can be
unit-tested without starting anything. Nothing here imports ray or torch at module import time
except the modules that build and drive an algorithm (recipes, driver internals).
"""
