"""Junk text (issue 12): random letters in word-sized groups, hex and base64 blobs, keyboard mash are
reported like mojibake; real text in Latin-script languages, code and Chinese never is.

The numbers behind the thresholds in ingest/clean.py (flagged / total per group):

    .venv/bin/python -m tests.test_junk_text
"""

from __future__ import annotations

import base64
import json
import random
import string
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings

from ingest.clean import letter_stats, looks_like_random_letters, looks_wordless
from ingest.pipeline import ingest_paths
from tests.conftest import REPO, SHARED_EVAL
from tests.test_ingest_pipeline import EN_TEXT, settings_for

# Written for these tests: the same few sentences (about the app) in other Latin-script languages.
LATIN_SAMPLES = {
    "French": (
        "Le système de recherche documentaire fonctionne entièrement sur votre ordinateur. Vous importez d'abord "
        "vos documents dans une base de connaissances locale, puis vous posez des questions en français ou en "
        "anglais. L'application trouve les passages pertinents, les transmet à un modèle de langage qui s'exécute "
        "sur la machine, et cite ses sources dans la réponse. Aucune donnée ne quitte l'ordinateur : ni les "
        "documents, ni l'index, ni le modèle."
    ),
    "German": (
        "Das Programm beantwortet Fragen zu Ihren eigenen Dokumenten, ohne dass etwas den Rechner verlässt. "
        "Zuerst werden die Dateien in eine Wissensdatenbank eingelesen; danach können Sie auf Deutsch oder "
        "Englisch fragen. Die Anwendung sucht die passenden Abschnitte heraus, übergibt sie einem lokal "
        "laufenden Sprachmodell und nennt in der Antwort die Quellen. Verschlüsselte PDF-Dateien benötigen "
        "ein Passwort. Schließlich überprüft die Software, ob die Antwort durch die zitierten Stellen gedeckt ist."
    ),
    "Spanish": (
        "La aplicación responde preguntas sobre sus propios documentos sin que nada salga del ordenador. Primero "
        "se importan los archivos en una base de conocimiento local; después puede preguntar en español o en "
        "inglés. El programa busca los fragmentos pertinentes, se los entrega a un modelo de lenguaje que se "
        "ejecuta en la máquina y cita las fuentes en la respuesta. ¿Qué ocurre si la respuesta no está en los "
        "documentos? Entonces lo dice con claridad."
    ),
    "pinyin with tone marks": (
        "Zhè ge yìngyòng kěyǐ huídá guānyú nǐ zìjǐ wéndàng de wèntí, suǒyǒu de shùjù dōu liú zài běnjī. "
        "Shǒuxiān bǎ wénjiàn dǎorù zhīshíkù, ránhòu yòng zhōngwén huò yīngwén tíwèn. Yìngyòng huì zhǎochū "
        "xiāngguān de duànluò, jiāo gěi běnjī yùnxíng de dà yǔyán móxíng shēngchéng huídá, bìng zài huídá "
        "zhōng zhùmíng chūchù."
    ),
    "pinyin with tone numbers": (
        "Zhe4 ge4 ying4yong4 ke3yi3 hui2da2 guan1yu2 ni3 zi4ji3 wen2dang4 de wen4ti2, suo3you3 de shu4ju4 dou1 "
        "liu2 zai4 ben3ji1. Shou3xian1 ba3 wen2jian4 dao3ru4 zhi1shi2ku4, ran2hou4 yong4 zhong1wen2 huo4 "
        "ying1wen2 ti2wen4. Ying4yong4 hui4 zhao3chu1 xiang1guan1 de duan4luo4, jiao1 gei3 ben3ji1 yun4xing2 "
        "de da4 yu3yan2 mo2xing2 sheng1cheng2 hui2da2."
    ),
    "Vietnamese": (
        "Ứng dụng này trả lời câu hỏi về tài liệu của chính bạn mà không có gì rời khỏi máy tính. Trước tiên, "
        "bạn nhập các tệp vào một cơ sở tri thức cục bộ, sau đó đặt câu hỏi bằng tiếng Việt hoặc tiếng Anh. "
        "Chương trình tìm những đoạn văn liên quan, chuyển chúng cho một mô hình ngôn ngữ chạy trên máy và ghi "
        "rõ nguồn trong câu trả lời. Các tệp được mã hóa cần có mật khẩu."
    ),
    "Polish": (
        "Aplikacja odpowiada na pytania dotyczące Twoich własnych dokumentów, a żadne dane nie opuszczają "
        "komputera. Najpierw wczytujesz pliki do lokalnej bazy wiedzy, potem zadajesz pytania po polsku lub po "
        "angielsku. Program wyszukuje odpowiednie fragmenty, przekazuje je modelowi językowemu działającemu na "
        "tym komputerze i podaje źródła w odpowiedzi. Zaszyfrowane pliki wymagają hasła."
    ),
    "Czech": (
        "Aplikace odpovídá na otázky týkající se vašich vlastních dokumentů a žádná data neopouštějí počítač. "
        "Nejprve načtete soubory do místní znalostní báze a potom se ptáte česky nebo anglicky. Program vyhledá "
        "příslušné pasáže, předá je jazykovému modelu, který běží na tomto stroji, a v odpovědi uvede zdroje. "
        "Zašifrované soubory vyžadují heslo. Strč prst skrz krk."
    ),
    "Welsh": (
        "Mae'r rhaglen yn ateb cwestiynau am eich dogfennau eich hun heb i ddim adael y cyfrifiadur. Yn gyntaf, "
        "rydych chi'n mewnforio'r ffeiliau i gronfa wybodaeth leol, wedyn gallwch ofyn cwestiynau yn Gymraeg neu "
        "yn Saesneg. Mae'r rhaglen yn chwilio am y darnau perthnasol ac yn eu rhoi i fodel iaith sy'n rhedeg ar "
        "y peiriant, gan nodi'r ffynonellau yn yr ateb."
    ),
    "Finnish": (
        "Sovellus vastaa omia asiakirjojasi koskeviin kysymyksiin, eikä mikään poistu tietokoneelta. Ensin tuot "
        "tiedostot paikalliseen tietokantaan, minkä jälkeen voit kysyä suomeksi tai englanniksi. Ohjelma etsii "
        "asiaankuuluvat kohdat, antaa ne koneella toimivalle kielimallille ja mainitsee lähteet vastauksessa."
    ),
    "English, commands and acronyms": (
        "Run pip install rag-app[ocr] then set RAG_LLM__MODEL_PATH=/models/q4_k.gguf and RAG_EMBEDDING__MODEL_PATH. "
        "The CLI flags are --kb, --json, --hide-source, --prune. Use nvidia-smi, lscpu, dmesg, strace, ldd and xz; "
        "see /usr/lib/x86_64-linux-gnu/libstdc++.so.6 and /etc/systemd/system/rag.service. CUDA 12.1, cuDNN 8.9, "
        "NCCL, MKL, BLAS, GGUF, GPTQ, AWQ, LLaMA, BERT, SQL, HTTP, JSON, YAML, TOML, WSGI, ASGI."
    ),
    "x86 assembly": "\n".join(
        [
            "0000000000001139 <main>:",
            "    1139:  push   %rbp",
            "    113a:  mov    %rsp,%rbp",
            "    113d:  sub    $0x10,%rsp",
            "    1141:  mov    %edi,-0x4(%rbp)",
            "    1144:  mov    %rsi,-0x10(%rbp)",
            "    1148:  lea    0xeb5(%rip),%rax        # 2004 <_IO_stdin_used+0x4>",
            "    114f:  mov    %rax,%rdi",
            "    1152:  call   1030 <puts@plt>",
            "    1157:  mov    $0x0,%eax",
            "    115c:  leave",
            "    115d:  ret",
            "    115e:  xchg   %ax,%ax",
            "    1160:  push   %r15",
            "    1162:  lea    0x2c7f(%rip),%r15       # 3de8 <__frame_dummy_init_array_entry>",
            "    1169:  push   %r14",
            "    116b:  mov    %rdx,%r14",
            "    116e:  push   %r13",
            "    1170:  mov    %rsi,%r13",
            "    1173:  push   %r12",
            "    1175:  mov    %edi,%r12d",
            "    1178:  push   %rbp",
            "    1179:  lea    0x2c70(%rip),%rbp        # 3df0 <__do_global_dtors_aux_fini_array_entry>",
            "    1180:  push   %rbx",
            "    1181:  sub    %r15,%rbp",
            "    1184:  sub    $0x8,%rsp",
            "    1188:  call   1000 <_init>",
            "    118d:  sar    $0x3,%rbp",
            "    1191:  je     11ae <__libc_csu_init+0x4e>",
            "    1193:  xor    %ebx,%ebx",
            "    1195:  nopl   0x0(%rax)",
            "    1198:  mov    %r14,%rdx",
            "    119b:  mov    %r13,%rsi",
            "    119e:  mov    %r12d,%edi",
            "    11a1:  call   *(%r15,%rbx,8)",
            "    11a5:  add    $0x1,%rbx",
            "    11a9:  cmp    %rbx,%rbp",
            "    11ac:  jne    1198 <__libc_csu_init+0x38>",
        ]
    ),
}

Generator = Callable[[random.Random], str]


def _random_words(length: Callable[[random.Random], int], chars: int = 600, cap: bool = False) -> Generator:
    def make(rng: random.Random) -> str:
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < chars:
            word = "".join(rng.choice(string.ascii_lowercase) for _ in range(length(rng)))
            words.append(word.capitalize() if cap else word)
        return " ".join(words)

    return make


def _english_length(rng: random.Random) -> int:
    return rng.choices(range(1, 13), [3, 17, 20, 16, 11, 9, 8, 6, 4, 3, 2, 1])[0]


def _keyboard_mash(rng: random.Random) -> str:
    rows = ["asdfghjkl", "qwertyuiop", "zxcvbnm", "asdfghjkl;'", "qwertasdfg"]
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < 600:
        row = rng.choice(rows)
        start = rng.randrange(len(row))
        words.append("".join(row[(start + rng.choice([0, 1, 1, 2, -1]) * k) % len(row)] for k in range(rng.randint(2, 8))))
    return " ".join(words)


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


JUNK: dict[str, Generator] = {
    "random letters, word lengths 1-10": _random_words(lambda r: r.randint(1, 10)),
    "random letters, word lengths 3-7": _random_words(lambda r: r.randint(3, 7)),
    "random letters, 2-letter words": _random_words(lambda r: 2),
    "random letters, 3-letter words": _random_words(lambda r: 3),
    "random letters, English word lengths": _random_words(_english_length),
    "random letters, geometric lengths (mean 5)": _random_words(lambda r: min(20, 1 + int(r.expovariate(0.25)))),
    "random letters, capitalised words": _random_words(lambda r: r.randint(2, 9), cap=True),
    "random letters, 300 characters": _random_words(lambda r: r.randint(2, 9), chars=300),
    "random letters, short lines": lambda r: "\n".join(_random_words(lambda q: q.randint(2, 9), chars=60)(r) for _ in range(10)),
    "base64, 76 per line": lambda r: base64.encodebytes(r.randbytes(450)).decode(),
    "base64 in groups of 8": lambda r: " ".join(_chunks(base64.b64encode(r.randbytes(450)).decode(), 8)),
    "hex in groups of 4": lambda r: " ".join(r.randbytes(2).hex() for _ in range(150)),
    "hex dump (xxd)": lambda r: "\n".join(f"{i * 16:08x}: " + " ".join(r.randbytes(2).hex() for _ in range(8)) for i in range(12)),
    "hex digests": lambda r: " ".join(r.randbytes(16).hex() for _ in range(20)),
    "keyboard mash": _keyboard_mash,
}
SAMPLES_PER_GENERATOR = 50


def junk_texts(name: str) -> list[str]:
    rng = random.Random(list(JUNK).index(name))
    return [JUNK[name](rng) for _ in range(SAMPLES_PER_GENERATOR)]


def real_groups() -> dict[str, list[str]]:
    """Real text: the shared eval set (when present), the repo's own code, the samples above."""
    from ingest.loaders import load_document

    groups: dict[str, list[str]] = {}
    if SHARED_EVAL.is_dir():
        for name in ("expmrc-squad-dev.json", "cmrc2018_trial.squad.json"):
            data = json.loads((SHARED_EVAL / "qa" / name).read_text(encoding="utf-8"))
            groups[f"qa contexts {name}"] = [p["context"] for a in data["data"] for p in a["paragraphs"]]
        docs = sorted((SHARED_EVAL / "docs").glob("*.md")) + sorted((SHARED_EVAL / "docs").glob("*.txt"))
        groups["eval docs .md/.txt"] = [p.read_text(encoding="utf-8", errors="replace") for p in docs]
        office = [*sorted((SHARED_EVAL / "office").iterdir()), SHARED_EVAL / "docs" / "chatchat_ocr_test.docx"]
        groups["eval office files (sections)"] = [s.text for p in office for s in load_document(p).sections]
    code = [p for p in REPO.rglob("*.py") if not {".venv", "build"} & set(p.relative_to(REPO).parts)]
    groups["repo .py files"] = [p.read_text(encoding="utf-8") for p in sorted(code)]
    groups["Latin-script languages, commands, assembly"] = list(LATIN_SAMPLES.values())
    return groups


def measure() -> list[tuple[str, str, int, int]]:
    """(kind, group, flagged, total) for every group."""
    groups = [("real", name, texts) for name, texts in real_groups().items()]
    groups += [("junk", name, junk_texts(name)) for name in JUNK]
    return [(kind, name, sum(map(looks_wordless, texts)), len(texts)) for kind, name, texts in groups]


# --- tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(JUNK))
def test_junk_is_reported(name: str) -> None:
    texts = junk_texts(name)
    missed = [t[:60] for t in texts if not looks_wordless(t)]
    assert not missed, f"{len(missed)}/{len(texts)} not flagged, e.g. {missed[0]!r}"


@pytest.mark.parametrize("language", list(LATIN_SAMPLES))
def test_real_text_in_latin_script_languages_is_not_junk(language: str) -> None:
    text = LATIN_SAMPLES[language]
    assert letter_stats(text) is not None  # judged, not skipped for being short
    assert not looks_wordless(text)


def test_no_real_text_is_flagged(shared_eval: Path) -> None:
    groups = real_groups()
    assert len(groups["qa contexts expmrc-squad-dev.json"]) > 300 and len(groups["repo .py files"]) > 50
    flagged = {name: [t[:80] for t in texts if looks_wordless(t)] for name, texts in groups.items()}
    assert {name: hits for name, hits in flagged.items() if hits} == {}


def test_acronym_heavy_and_rhythmic_english_is_not_junk() -> None:
    """Consonant pile-ups alone would take these for random letters; their letter entropy says otherwise."""
    text = "NCCL and HTTP over TCP: the strengths of rhythm. " * 10
    stats = letter_stats(text)
    assert stats is not None and stats.consonant_pairs > 0.45
    assert not looks_like_random_letters(text)


def test_chinese_text_is_never_judged_by_its_latin_letters() -> None:
    rng = random.Random(7)
    junk = _random_words(lambda r: r.randint(3, 7), chars=400)(rng)
    zh = "知识库问答系统把文档切成小块，再用向量检索找到相关段落。" * 3
    mixed = f"{zh}\n{junk}"
    assert letter_stats(mixed) is None and not looks_like_random_letters(mixed)
    assert looks_like_random_letters(junk)  # the same letters alone are junk


def test_random_real_words_are_out_of_scope() -> None:
    """Shuffled dictionary words read like text letter by letter: not flagged (a known limit)."""
    rng = random.Random(3)
    words = EN_TEXT.split()
    shuffled = " ".join(rng.sample(words, len(words)) * 3)
    assert not looks_wordless(shuffled)


def test_a_file_of_random_words_is_reported_not_indexed(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = random.Random(11)
    (folder / "junk.txt").write_text(_random_words(lambda r: r.randint(2, 8), chars=5000)(rng), encoding="utf-8")
    (folder / "ok.txt").write_text(EN_TEXT, encoding="utf-8")
    report = ingest_paths(settings_for(tmp_path / "data"), [folder], embeddings=fake_embeddings)
    by_path = {f.path: f for f in report.files}
    assert by_path["in/junk.txt"].status == "failed" and "unreadable" in by_path["in/junk.txt"].reason
    assert by_path["in/junk.txt"].chunks == 0
    assert by_path["in/ok.txt"].status == "added"


if __name__ == "__main__":  # the measurement table (a developer's command, see the module docstring)
    for kind, name, flagged, total in measure():
        sys.stdout.write(f"{kind:5s} {name:45s} flagged {flagged:3d} / {total:3d}\n")
