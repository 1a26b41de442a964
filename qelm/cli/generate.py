"""``qelm generate`` and ``qelm chat``: text sampled from a checkpoint, printed as it is sampled."""

from __future__ import annotations

import argparse
import sys

from ..chat import Chat
from ..checkpoint import load_checkpoint
from ..decode import compile_model
from ..evaluate import stream_text
from ..tokenizer import describe_chars
from .options import UserError, add_runtime_flags, add_sampling_flags, sampling_kwargs, set_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser("generate", help="sample text from a checkpoint",
                                description="Continue a prompt with text sampled from a checkpoint, printed as it is "
                                            "sampled. The sampling flags are Hugging Face's.")
    gen.add_argument("--checkpoint", required=True, metavar="DIR",
                     help="checkpoint folder (e.g. runs/demo/qelm, or runs/demo/qelm/best; no default)")
    gen.add_argument("--prompt", required=True, help="text to continue (no default)")
    add_sampling_flags(gen)
    add_runtime_flags(gen)
    _add_compile_flag(gen)
    gen.set_defaults(func=run_generate)

    chat = subparsers.add_parser("chat", help="talk with a checkpoint: each line you type, the model continues",
                                 description="An interactive loop: each line read (from the terminal, or piped in) is "
                                             "added to the conversation, and the model's reply is streamed as it is "
                                             "sampled, up to --max-new-tokens or a --stop string (default: the end of "
                                             "the line). The model reads the whole conversation up to its context "
                                             "length; older tokens drop out. /reset forgets the conversation; /quit, "
                                             "Ctrl-D or the end of the input ends.")
    chat.add_argument("checkpoint_dir", nargs="?", metavar="CHECKPOINT",
                      help="checkpoint folder (no default: give it, or --checkpoint)")
    chat.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder, as CHECKPOINT (no default: give one of the two)")
    add_sampling_flags(chat, stop=CHAT_STOP, max_new_tokens=CHAT_MAX_NEW_TOKENS)
    add_runtime_flags(chat)
    _add_compile_flag(chat)
    chat.set_defaults(func=run_chat)


def _add_compile_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model and its decode step (a static KV cache): fewer, fused kernels per "
                             "token, after a compilation of tens of seconds; pays for long generations (backend "
                             "qelm.fused; default: off)")


CHAT_STOP = ("\n",)  # a reply ends with its line
CHAT_MAX_NEW_TOKENS = 200


def _note_unknown(command: str, tokenizer, text: str, what: str) -> None:
    """A note on stderr naming the characters of ``text`` that become the unknown token."""
    unknown = tokenizer.unknown_characters(text) if getattr(tokenizer, "unk_id", None) is not None else set()
    if unknown:
        print(f"qelm {command}: note: {what} has {len(unknown)} character(s) outside the vocabulary, read as the "
              f"unknown token: {describe_chars(unknown)}", file=sys.stderr)


def run_generate(args: argparse.Namespace) -> int:
    """Print the prompt, then each piece of text as it is sampled; Ctrl-C stops, keeping what was printed."""
    set_threads(args)
    ck = load_checkpoint(args.checkpoint, backend=args.backend)
    if args.compile:
        compile_model(ck.model)
    pieces = stream_text(ck.model, ck.tokenizer, args.prompt, seed=args.seed,
                         **sampling_kwargs(args))  # checks every argument
    print(f"qelm generate: checkpoint {ck.describe()}", file=sys.stderr)
    _note_unknown("generate", ck.tokenizer, args.prompt, "the prompt")
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    written = 0
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
            written += len(piece)
    except KeyboardInterrupt:
        print(flush=True)
        print(f"qelm generate: interrupted; the {written} character(s) generated before it are printed above",
              file=sys.stderr)
        return 130
    print()
    return 0


def run_chat(args: argparse.Namespace) -> int:
    """Read a line, stream the reply; until /quit or the end of the input. Ctrl-C stops a reply (keeping
    what was printed) and, at the prompt, ends the chat."""
    if args.checkpoint_dir and args.checkpoint and args.checkpoint_dir != args.checkpoint:
        raise UserError(f"two checkpoints given ({args.checkpoint_dir} and --checkpoint {args.checkpoint}): give one")
    folder = args.checkpoint_dir or args.checkpoint
    if not folder:
        raise UserError("no checkpoint given: qelm chat CHECKPOINT (a checkpoint folder, e.g. runs/demo/qelm)")
    set_threads(args)
    ck = load_checkpoint(folder, backend=args.backend)
    if args.compile:
        compile_model(ck.model)
    chat = Chat(ck.model, ck.tokenizer, seed=args.seed, **sampling_kwargs(args, CHAT_STOP))
    interactive = sys.stdin.isatty()
    print(f"qelm chat: checkpoint {ck.describe()}; the model reads the last {chat.context_len} tokens of the "
          f"conversation. /reset forgets it; /quit{' or Ctrl-D' if interactive else ''} ends.", file=sys.stderr)
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            line = ""
            if interactive:
                print()
                break
        if not interactive and not line:  # the end of the input
            break
        line = line.removesuffix("\n")
        if line.strip() == "/quit":
            break
        if line.strip() == "/reset":
            chat.reset()
            print("qelm chat: conversation forgotten", file=sys.stderr)
            continue
        _note_unknown("chat", ck.tokenizer, line, "the line")
        try:
            for piece in chat.reply(line):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            print("\nqelm chat: reply stopped", file=sys.stderr)
        print(flush=True)
    return 0
