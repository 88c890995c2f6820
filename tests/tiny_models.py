"""Tiny random models built on the fly: real loading code, no download.

No PyPI package ships a Chinese chat model or a Chinese embedder, so the tests that need one build a
character-level one here (a few hundred kB, random weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
CHINESE = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴切图格包导入文档怎样问答知识库模型"


def char_vocab() -> list[str]:
    chars = [chr(c) for c in range(32, 127)] + sorted(set(CHINESE)) + list("，。！？；：、“”（）\n")
    seen: list[str] = []
    for ch in SPECIALS + chars:
        if ch not in seen:
            seen.append(ch)
    return seen


def char_tokenizer(chat_template: str | None = None):  # type: ignore[no-untyped-def]
    """A character-level fast tokenizer with Llama-style BOS/EOS."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(char_vocab())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    if chat_template:
        fast.chat_template = chat_template
    return fast


LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set sys = '' %}{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}{% if loop.first %}"
    "{{ bos_token }}[INST] <<SYS>>\n{{ sys }}\n<</SYS>>\n\n{{ m['content'] }} [/INST]"
    "{% else %}{{ bos_token }}[INST] {{ m['content'] }} [/INST]{% endif %}"
    "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


def build_tiny_llama(
    path: Path,
    *,
    chat_template: str | None = LLAMA2_CHAT_TEMPLATE,
    max_positions: int = 512,
    rope_scaling: dict[str, Any] | None = None,
    rope_theta: float = 10000.0,
) -> Path:
    """Save a 2-layer random Llama with a character tokenizer into ``path``.

    ``rope_scaling``: transformers' ``rope_scaling`` dict (e.g. ``{"rope_type": "linear", "factor": 4.0}``),
    as the 16K/64K Chinese-Alpaca-2 models carry it in config.json.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = char_tokenizer(chat_template)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_sentence_transformer(path: Path) -> Path:
    """Save a 2-layer random BERT sentence-transformer whose vocabulary is single characters (Chinese)."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    raw = path.parent / (path.name + "-bert")
    raw.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [c for c in char_vocab()[4:] if c.strip()]
    (raw / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(raw / "vocab.txt"), do_lower_case=False, tokenize_chinese_chars=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=128)
    pooling = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pooling]).save(str(path))
    return path
