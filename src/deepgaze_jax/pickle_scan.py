"""Static checks of a pickle before it is unpickled (`check_pickle`), for `weights.read_pth`.

Restricting ``find_class`` stops a pickle from running code, but the C unpickler still
trusts two things a crafted file controls:

* declared lengths: ``BINBYTES8`` with a length of 2**62 makes it allocate that much
  before reading a byte (a raw ``MemoryError``);
* tuple sizes: dict keys and set members are hashed, and a tuple's hash recurses into
  its items without limit, so a key nested a million tuples deep overflows the C stack
  and kills the process, and tuples that share items through the memo (``BINGET``) hash
  in time exponential in their depth.

`check_pickle` walks the opcodes with `pickletools.genops`, which reads every declared
length against the bytes actually present, and emulates the unpickler's stack and memo
to bound the size of every tuple (its items counted each time they are reached).
"""

from __future__ import annotations

import pickle
import pickletools
from typing import BinaryIO

__all__ = ["MAX_TUPLE_NODES", "check_pickle"]

MAX_TUPLE_NODES = 1024  # a tensor's rebuild arguments take about 10 + 2 x its number of dimensions

_TUPLE_OPS = frozenset({"EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "FROZENSET"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_CHUNK = 1 << 20
_MARK = None  # the emulated stack holds tuple sizes (1 for anything else) and marks


def _stack_effect(opcode: pickletools.OpcodeInfo) -> tuple[bool, int, int]:
    """(pops through a MARK, objects popped below the MARK or in all, objects pushed)."""
    before, mark = opcode.stack_before, pickletools.markobject
    return mark in before, before.index(mark) if mark in before else len(before), len(opcode.stack_after)


_EFFECTS = {opcode.name: _stack_effect(opcode) for opcode in pickletools.opcodes}


def _pop_operands(stack: list[int | None], name: str) -> list[int]:
    """Pops what opcode ``name`` consumes; returns the items above its MARK, or else its operands."""
    takes_mark, below, _ = _EFFECTS[name]
    above: list[int | None] | None = None
    if takes_mark or (name == "POP" and stack and stack[-1] is _MARK):
        if _MARK not in stack:
            raise pickle.UnpicklingError(f"{name} without a MARK")
        mark = len(stack) - 1 - stack[::-1].index(_MARK)
        above, stack[mark:] = stack[mark + 1 :], []
        below = below if takes_mark else 0
    operands = stack[len(stack) - below :] if below else []
    if len(operands) < below or _MARK in operands:
        raise pickle.UnpicklingError(f"{name} finds too few objects on the stack")
    del stack[len(stack) - below :]
    return above if above is not None else operands


class _ChunkedReader:
    """``file`` whose ``read(n)`` allocates only what is there (a declared length of 2**62 costs nothing)."""

    def __init__(self, file: BinaryIO):
        self._file = file
        self.readline, self.tell = file.readline, file.tell

    def read(self, n: int) -> bytes:
        chunks = []
        while n > 0 and (chunk := self._file.read(min(n, _CHUNK))):
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


def check_pickle(file: BinaryIO) -> None:
    """Reads one pickle from ``file`` up to its STOP, without building any object.

    Raises:
      pickle.UnpicklingError: a tuple of more than `MAX_TUPLE_NODES` nodes, or a stack
        the opcodes do not fit.
      ValueError: an unknown opcode, a declared length beyond the data, or no STOP.
    """
    stack: list[int | None] = []
    memo: dict[int, int] = {}
    for opcode, arg, _ in pickletools.genops(_ChunkedReader(file)):
        if opcode.name == "MARK":
            stack.append(_MARK)
            continue
        operands = _pop_operands(stack, opcode.name)
        if opcode.name in _TUPLE_OPS:
            nodes = 1 + sum(operands)
            if nodes > MAX_TUPLE_NODES:
                raise pickle.UnpicklingError(
                    f"a tuple of {nodes} nodes (items counted each time they are reached; at most {MAX_TUPLE_NODES})"
                )
            stack.append(nodes)
        elif opcode.name in _GET_OPS:
            stack.append(memo.get(arg, 1))
        else:
            stack.extend([1] * _EFFECTS[opcode.name][2])
        if opcode.name in _PUT_OPS and stack and stack[-1] is not _MARK:
            memo[len(memo) if opcode.name == "MEMOIZE" else arg] = stack[-1]
