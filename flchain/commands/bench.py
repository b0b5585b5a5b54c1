"""`flchain bench ...`: quick measurements a user can run on their own machine."""

from __future__ import annotations

import json
from typing import cast

import click

from flchain.crypto.errors import CryptoError
from flchain.crypto.obfuscators import ObfuscatorMethod


@click.group("bench")
def bench() -> None:
    """Measure the cost of flchain's building blocks on this machine."""


def _fmt(seconds: float) -> str:
    return f"{seconds:10.3f} s"


def _print_human(r: dict) -> None:
    from flchain.crypto.bench import MILLION

    b, p, s = r["baseline"], r["packed"], r["speedup"]
    dim = r["dim"]
    how = f"timed on {b['sample']} values, extrapolated" if b["extrapolated"] else "measured"
    click.echo(
        f"Paillier {r['key_bits']}-bit, d = {dim:,}, {r['bits']}-bit values, N = {r['members']}"
        f" ({r['slots_per_plaintext']} values per plaintext, {r['plaintexts']:,} ciphertexts)"
    )
    if r["keygen_s"] is not None:
        click.echo(f"  key generation                   {_fmt(r['keygen_s'])}")
    click.echo(f"plain phe, value by value, 1 process ({how}):")
    click.echo(f"  per value                        {b['per_value_s'] * 1e3:10.3f} ms")
    click.echo(f"  d = {dim:<12,}                 {_fmt(b['total_s'])}")
    click.echo(f"  d = {MILLION:<12,} (extrapolated)  {_fmt(b['total_1m_s'])}")
    click.echo(f"packed, {r['workers']} worker(s), {r['method']} obfuscators (measured on all d):")
    if p["key_setup_s"]:
        click.echo(f"  one-time per key: DJN fixed-base table {_fmt(p['key_setup_s'])}")
    click.echo(f"  obfuscator precomputation        {_fmt(p['obfuscators_s'])}")
    click.echo(f"  encryption (quantize, pack, mul) {_fmt(p['encrypt_s'])}")
    click.echo(f"  together                         {_fmt(p['total_s'])}")
    click.echo(f"  d = {MILLION:<12,} (extrapolated)  {_fmt(p['total_1m_s'])}")
    click.echo(
        f"speedup: {s['total']:,.0f}x including precomputation, {s['online']:,.0f}x online "
        f"(obfuscators precomputed); {s['total_1m']:,.0f}x at 1M"
    )


@bench.command("paillier")
@click.option("--dim", "dim", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--key-bits", type=click.IntRange(min=256), default=2048, show_default=True)
@click.option(
    "--baseline-sample",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="values encrypted with plain phe; the time is extrapolated to --dim",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="default: all CPUs")
@click.option("--bits", type=click.IntRange(1, 52), default=16, show_default=True)
@click.option("--members", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--method",
    type=click.Choice(["djn", "full"]),
    default="djn",
    show_default=True,
    help="obfuscators: fixed-base DJN (fast) or full r^n per plaintext",
)
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def paillier_command(
    dim: int,
    key_bits: int,
    baseline_sample: int,
    workers: int | None,
    bits: int,
    members: int,
    method: str,
    repeats: int,
    as_json: bool,
) -> None:
    """Plain phe (value by value) versus packed Paillier encryption of D parameters."""
    from flchain.crypto.bench import compare_phe_packed  # torch, phe: only to measure

    try:
        result = compare_phe_packed(
            dim,
            key_bits=key_bits,
            baseline_sample=baseline_sample,
            workers=workers,
            bits=bits,
            members=members,
            method=cast(ObfuscatorMethod, method),
            repeats=repeats,
        )
    except CryptoError as exc:
        raise click.UsageError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_human(result)
