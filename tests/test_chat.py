"""``qelm chat``: a conversation with a checkpoint, each reply streamed, the model reading the conversation
up to its context length."""

import subprocess
import sys

import pytest
import torch

from qelm import ClassicalLM, save_checkpoint
from qelm.chat import Chat
from qelm.data import TextDataset
from qelm.evaluate import generate_text

TEXT = "hello world. how are you?\nfine, and you?\n" * 40


@pytest.fixture
def model_and_tokenizer(tiny_config):
    ds = TextDataset.from_text(TEXT)
    torch.manual_seed(0)
    return ClassicalLM(tiny_config.replace(vocab_size=ds.vocab_size, context_len=8)).eval(), ds.tokenizer


def test_a_reply_continues_the_conversation_and_ends_at_its_line(model_and_tokenizer):
    model, tok = model_and_tokenizer
    chat = Chat(model, tok, max_new_tokens=30, seed=1)
    pieces = list(chat.reply("hello"))
    reply = "".join(pieces)
    assert "\n" not in reply and len(reply) <= 30
    assert reply == generate_text(model, tok, "hello\n", max_new_tokens=30, seed=1, stop="\n"), \
        "the first reply is the continuation of the message and a newline"
    assert len(chat.ids) == min(8, len(tok.encode(f"hello\n{reply}\n"))), "the conversation, up to context_len"
    for _ in range(5):
        "".join(chat.reply("how are you?"))
        assert 0 < len(chat.ids) <= chat.context_len == 8
    again = Chat(model, tok, max_new_tokens=30, seed=1)
    assert "".join(again.reply("hello")) == reply, "the same seed and messages give the same replies"
    chat.reset()
    assert chat.ids == []


def test_a_reply_stopped_early_joins_the_conversation_as_far_as_it_went(model_and_tokenizer):
    model, tok = model_and_tokenizer
    chat = Chat(model, tok, max_new_tokens=50, stop=(), seed=2)
    stream = chat.reply("fine")
    first = next(stream)
    stream.close()
    assert tok.decode(chat.ids).endswith(f"fine\n{first}\n"[-8:])
    with pytest.raises(ValueError, match="top_p=2 is invalid"):
        Chat(model, tok, top_p=2)


def test_cli_chat_streams_replies_to_piped_lines(tmp_path, model_and_tokenizer):
    model, tok = model_and_tokenizer
    save_checkpoint(tmp_path / "ck", model, tok)
    run = subprocess.run([sys.executable, "-m", "qelm", "chat", str(tmp_path / "ck"), "--max-new-tokens", "12",
                          "--seed", "3", "--threads", "1"], input="hello\nhow are you?\n/reset\nfine\n",
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    replies = run.stdout.split("\n")
    assert len(replies) == 4 and replies[-1] == "", "one line per message, /reset none"
    assert all(len(r) <= 12 for r in replies)
    assert "qelm chat: checkpoint" in run.stderr and "conversation forgotten" in run.stderr
    chat = Chat(model, tok, max_new_tokens=12, seed=3)
    expected = ["".join(chat.reply(m)) for m in ("hello", "how are you?")]
    assert replies[:2] == expected, "the command line's replies are the library's"
    run = subprocess.run([sys.executable, "-m", "qelm", "chat", "--checkpoint", str(tmp_path / "ck"), "--top-p", "0"],
                         input="", capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "argument --top-p: 0 is invalid" in run.stderr
