"""Server-side signing for the dev accounts (eth_sendTransaction, eth_sign and friends).

cast `send --unlocked` and web3's default-account flow hand the node an unsigned transaction
from an account it holds. The node fills in nonce, gas and fees the way geth does, signs with
the account key, and the result travels the same road as eth_sendRawTransaction, so the
journal only ever stores signed raw transactions.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import to_checksum_address

from flchain.devnet.accounts import DevAccount
from flchain.devnet.chain import DevChain
from flchain.devnet.encoding import to_data
from flchain.devnet.errors import InvalidParamsError, RpcError
from flchain.devnet.fees import SUGGESTED_PRIORITY_FEE, suggested_gas_price
from flchain.devnet.txargs import TxArgs, access_list_to_json


def dev_account(chain: DevChain, address: bytes | None) -> DevAccount:
    """The dev account that must sign for `address`."""
    if address is None:
        raise InvalidParamsError("the transaction needs a from address")
    account = chain.account(address)
    if account is None:
        raise RpcError(f"unknown account {to_data(address)}: the node holds no key for it")
    return account


def sign_transaction(chain: DevChain, args: TxArgs) -> bytes:
    """Fill defaults, sign with the sender's dev key and return the raw transaction."""
    account = dev_account(chain, args.sender)
    if args.chain_id is not None and args.chain_id != chain.chain_id:
        raise InvalidParamsError(f"chainId {args.chain_id} is not this chain's ({chain.chain_id})")
    with chain.lock:
        nonce = args.nonce
        if nonce is None:
            nonce = chain.get_nonce(account.canonical_address, "pending")
        fields: dict[str, Any] = {
            "nonce": nonce,
            "value": args.value,
            "data": args.data,
            "chainId": chain.chain_id,
        }
        if args.to is not None:
            fields["to"] = to_checksum_address(args.to)
        tx_type = _choose_type(args)
        if tx_type == 2:
            tip, max_fee = _dynamic_fees(chain, args)
            fields.update(maxPriorityFeePerGas=tip, maxFeePerGas=max_fee, type=2)
        else:
            fields["gasPrice"] = (
                args.gas_price if args.gas_price is not None else suggested_gas_price(chain)
            )
            if tx_type == 1:
                fields["type"] = 1
        if tx_type >= 1:
            fields["accessList"] = access_list_to_json(args.access_list or ())
        gas = args.gas
        if gas is None:
            estimate_args = TxArgs(
                sender=args.sender,
                to=args.to,
                value=args.value,
                data=args.data,
                nonce=nonce,
                access_list=args.access_list,
            )
            gas = chain.estimate_gas(estimate_args, "pending")
        fields["gas"] = gas
    try:
        signed = Account.sign_transaction(fields, account.private_key)
    except Exception as exc:  # client-chosen fields: eth_account's ValidationError is no ValueError
        raise InvalidParamsError(f"cannot sign the transaction: {exc}") from exc
    return bytes(signed.raw_transaction)


def send_transaction(chain: DevChain, args: TxArgs) -> bytes:
    """Sign and submit as one step, so that concurrent sends never share a nonce."""
    with chain.lock:
        return chain.send_raw_transaction(sign_transaction(chain, args))


def sign_message(chain: DevChain, address: bytes, message: bytes) -> str:
    """EIP-191 personal-message signature (eth_sign, personal_sign)."""
    account = dev_account(chain, address)
    signed = Account.sign_message(encode_defunct(primitive=message), account.private_key)
    return to_data(bytes(signed.signature))


def sign_typed_data(chain: DevChain, address: bytes, typed_data: Any) -> str:
    """EIP-712 signature (eth_signTypedData_v4)."""
    account = dev_account(chain, address)
    if not isinstance(typed_data, dict):
        raise InvalidParamsError("typed data must be a JSON object (or a string holding one)")
    try:
        signed = Account.sign_typed_data(account.private_key, full_message=typed_data)
    except Exception as exc:  # client-written typed data: eth_utils' ValidationError and more
        raise InvalidParamsError(f"invalid EIP-712 typed data: {exc}") from exc
    return to_data(bytes(signed.signature))


def _choose_type(args: TxArgs) -> int:
    if args.tx_type is not None:
        if args.tx_type == 2 and args.gas_price is not None:
            raise InvalidParamsError("a type-2 transaction takes maxFeePerGas, not gasPrice")
        if args.tx_type < 2 and (
            args.max_fee_per_gas is not None or args.max_priority_fee_per_gas is not None
        ):
            raise InvalidParamsError(f"a type-{args.tx_type} transaction takes gasPrice")
        return args.tx_type
    if args.gas_price is not None:
        return 1 if args.access_list else 0
    return 2


def _dynamic_fees(chain: DevChain, args: TxArgs) -> tuple[int, int]:
    tip = args.max_priority_fee_per_gas
    max_fee = args.max_fee_per_gas
    if tip is None:
        tip = SUGGESTED_PRIORITY_FEE if max_fee is None else min(SUGGESTED_PRIORITY_FEE, max_fee)
    if max_fee is None:
        max_fee = 2 * chain.next_base_fee() + tip
    return tip, max_fee
