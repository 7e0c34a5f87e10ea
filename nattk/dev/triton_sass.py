"""Counters read from the SASS of a compiled kernel: the compiler as a CPU-side profiler.

``cuobjdump -sass`` prints one line per machine instruction (``/*0450*/ @P0 LDG.E.128 R4,
[R2.64] ;``). From that text alone this module counts what decides a kernel's speed
before it ever runs: how wide its global loads and stores are, how many tensor-core
(MMA) instructions it issues, how many other instructions its innermost loop runs per
iteration, and its atomics. Plain text parsing, importable without Triton.

The key-block loops are the innermost loops (backward branches whose body holds no other
loop) with MMA instructions. The attention kernels have two: the interior tiles' fast
loop and the border tiles' loop. Their non-MMA instruction counts are per warp and per
iteration, so ``x num_warps`` gives the program's count per key block.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_LINE = re.compile(
    r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[0-7T]\s+)?([A-Z][A-Z0-9_]*)((?:\.[A-Z0-9_]+)*)([^;]*);"
)
_BRANCH_TARGET = re.compile(r"0x([0-9a-f]+)")
#: Tensor-core instructions (mma.sync on sm_80/86/90, wgmma on sm_90).
MMA_OPCODES = frozenset({"HMMA", "HGMMA", "IMMA", "DMMA", "BMMA"})
#: Instructions that issue nothing (padding, scheduling).
IDLE_OPCODES = frozenset({"NOP"})
#: Global loads, including the asynchronous global->shared copies of pipelined loads.
LOAD_OPCODES = frozenset({"LDG", "LDGSTS"})
STORE_OPCODES = frozenset({"STG"})
ATOMIC_OPCODES = frozenset({"RED", "ATOM", "ATOMG", "REDG"})
_WIDTH_SUFFIX = {"U8": 8, "S8": 8, "U16": 16, "S16": 16, "64": 64, "128": 128}


@dataclass(frozen=True)
class Instruction:
    """One SASS instruction: address, opcode, dot-suffixes and operand text."""

    address: int
    opcode: str
    suffixes: tuple[str, ...]
    operands: str

    @property
    def width(self) -> int:
        """Bits moved by a memory instruction (32 unless a suffix says otherwise)."""
        for suffix in self.suffixes:
            if suffix in _WIDTH_SUFFIX:
                return _WIDTH_SUFFIX[suffix]
        return 32


@dataclass
class SassCounters:
    """What one kernel's SASS says.

    Attributes:
        loads: global load (and async copy) count per width in bits.
        stores: global store count per width in bits.
        mma: MMA instructions in the whole kernel.
        loop_mma: MMA instructions in one iteration of the inner loop.
        loop_other: non-MMA instructions (NOPs excluded) in one iteration of the
            key-block loop with the most of them (the border tiles' loop), per warp.
        fast_loop_other: the same for the key-block loop with the fewest (the interior
            tiles' loop; equal to ``loop_other`` when there is one loop).
        atomics: atomic/reduction instructions in the whole kernel (static count).
        loop_atomics: atomic instructions inside the key-block loops, per iteration.
    """

    loads: Counter = field(default_factory=Counter)
    stores: Counter = field(default_factory=Counter)
    mma: int = 0
    loop_mma: int = 0
    loop_other: int = 0
    fast_loop_other: int = 0
    atomics: int = 0
    loop_atomics: int = 0

    def narrowest_load(self) -> int:
        return min(self.loads) if self.loads else 0

    def as_dict(self) -> dict:
        return {
            "loads": {str(k): v for k, v in sorted(self.loads.items())},
            "stores": {str(k): v for k, v in sorted(self.stores.items())},
            "mma": self.mma,
            "loop_mma": self.loop_mma,
            "loop_other": self.loop_other,
            "fast_loop_other": self.fast_loop_other,
            "atomics": self.atomics,
            "loop_atomics": self.loop_atomics,
        }


def parse(sass: str) -> list[Instruction]:
    """The instructions of ``cuobjdump -sass`` output, in address order."""
    out = []
    for match in _LINE.finditer(sass):
        address, _pred, opcode, suffixes, operands = match.groups()
        out.append(Instruction(int(address, 16), opcode, tuple(suffixes.split(".")[1:]), operands))
    return out


def _loops(instructions: list[Instruction]) -> list[tuple[int, int]]:
    """``(first, last)`` index of every backward branch's body."""
    index = {ins.address: i for i, ins in enumerate(instructions)}
    loops = []
    for i, ins in enumerate(instructions):
        if ins.opcode != "BRA":
            continue
        target = _BRANCH_TARGET.search(ins.operands)
        if target is None:
            continue
        start = int(target.group(1), 16)
        if start < ins.address and start in index:
            loops.append((index[start], i))
    return loops


def counters(sass: str) -> SassCounters:
    """Counts of one kernel's ``cuobjdump -sass`` text (see :class:`SassCounters`)."""
    instructions = parse(sass)
    if not instructions:
        raise ValueError("no SASS instructions found in the text given")
    result = SassCounters()
    for ins in instructions:
        if ins.opcode in LOAD_OPCODES:
            result.loads[ins.width] += 1
        elif ins.opcode in STORE_OPCODES:
            result.stores[ins.width] += 1
        elif ins.opcode in MMA_OPCODES:
            result.mma += 1
        elif ins.opcode in ATOMIC_OPCODES:
            result.atomics += 1
    loops = _loops(instructions)
    innermost = [
        (a, b)
        for a, b in loops
        if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)
    ]
    key_loops = []
    for first, last in innermost:
        body = instructions[first : last + 1]
        mma = sum(ins.opcode in MMA_OPCODES for ins in body)
        if mma:
            other = sum(
                ins.opcode not in MMA_OPCODES and ins.opcode not in IDLE_OPCODES for ins in body
            )
            key_loops.append((mma, other, sum(ins.opcode in ATOMIC_OPCODES for ins in body)))
    if key_loops:
        result.loop_mma = max(mma for mma, _, _ in key_loops)
        result.loop_other = max(other for _, other, _ in key_loops)
        result.fast_loop_other = min(other for _, other, _ in key_loops)
        result.loop_atomics = max(atomics for _, _, atomics in key_loops)
    return result
