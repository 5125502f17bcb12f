"""The fact-checker's knowledge base (concept names, synonyms, mutually exclusive groups) and
the dictionary matcher that finds concept mentions in a caption."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from ..metrics.concepts import MODALITY_CUIS, REGION_CUIS
from ..metrics.scorers import ConceptNameMatcher
from .lexicon import LEXICON

# Phrases ending in these nouns keep them when repaired ("MR image" -> "CT image").
_GENERIC_NOUNS = ("image", "scan")
# Adjectival forms ("abdominal", "sonographic", "mammary") are swapped for adjectives.
_ADJECTIVE_ENDINGS = ("al", "ic", "ary")

# ---------------------------------------------------------------------------------------
# Knowledge base
# ---------------------------------------------------------------------------------------

def exclusive_groups() -> dict[str, tuple[str, ...]]:
    """The mutually exclusive concept groups: the 7 modality and 8 body-region CUIs of the
    official secondary score (REFERENCE §4)."""
    return {"modality": MODALITY_CUIS, "region": REGION_CUIS}


def _plurals(phrase: str) -> list[str]:
    """The phrase and its regular plurals ("nodule" -> "nodules", "mass" -> "masses")."""
    if not phrase[-1:].isalpha():
        return [phrase]
    return [phrase, phrase + "s", phrase + "es"]


@dataclass
class KnowledgeBase:
    """What the fact-checker knows about concepts.

    ``names``: CUI -> canonical name; ``synonyms``: CUI -> every phrase a caption may use for
    it (matched); ``words``: CUI -> the phrases the fact-checker writes for it (the catalogue's
    caption words, plainest first; the canonical name otherwise); ``groups``: name ->
    mutually exclusive CUIs; ``qualifiers``: CUIs that only qualify another concept (right,
    left, ...), never written alone by ``augment``; ``kinds``: CUI -> the catalogue's kind.
    """

    names: dict[str, str]
    synonyms: dict[str, list[str]]
    groups: dict[str, tuple[str, ...]]
    words: dict[str, tuple[str, ...]] = field(default_factory=dict)
    qualifiers: frozenset[str] = frozenset()
    kinds: dict[str, str] = field(default_factory=dict)

    @cached_property
    def matcher(self) -> MentionMatcher:
        return MentionMatcher(self.synonyms)

    @cached_property
    def _group_of(self) -> dict[str, str]:
        return {c: g for g, members in self.groups.items() for c in members}

    def group_of(self, cui: str) -> str | None:
        return self._group_of.get(cui)

    def name(self, cui: str) -> str:
        return self.names.get(cui, cui)

    def phrase_for_augment(self, cui: str) -> str | None:
        """The words ``augment`` writes for a concept (None when it has no name): a finding's
        plain caption word ("nodule"), else the canonical name in lower case."""
        if self.kinds.get(cui) == "finding" and self.words.get(cui):
            return self.words[cui][0]
        name = self.names.get(cui)
        if not name:
            return None
        # "Pleural Effusion" -> "pleural effusion"; acronyms and mixed case ("X-Ray", "HbA1c") stay.
        return " ".join(w.lower() if w[:1].isupper() and w[1:].islower() else w for w in name.split())

    def replacement(self, mention_text: str, cui: str, sentence_start: bool = False) -> str:
        """The phrase that replaces ``mention_text`` when it must name ``cui`` instead.

        Among the concept's ``words``: an adjective for an adjective, one ending in the same
        generic noun ("image", "scan"), then the closest number of words, then the plainest
        (earliest). A generic noun the choice lacks is kept, and a capital at a sentence start.
        """
        candidates = list(self.words.get(cui) or [self.name(cui)])
        words = mention_text.split()
        is_adj = _is_adjective(mention_text)
        noun = _generic_noun(mention_text)

        def written(cand: str) -> str:
            return f"{cand} {words[-1]}" if noun and _generic_noun(cand) != noun else cand

        def cost(item):
            i, cand = item
            return (_is_adjective(cand) != is_adj, _generic_noun(cand) != noun,
                    abs(len(written(cand).split()) - len(words)), i)

        best = written(min(enumerate(candidates), key=cost)[1])
        if sentence_start and best[:1].islower():
            best = best[0].upper() + best[1:]
        elif not sentence_start and best[:1].isupper() and best[1:2].islower() and best.split()[0][1:].islower():
            best = best[0].lower() + best[1:]  # "Thoracic" mid-sentence -> "thoracic"
        return best


def _generic_noun(phrase: str) -> str | None:
    last = phrase.split()[-1].lower() if phrase.split() else ""
    return last if last in _GENERIC_NOUNS else None


def _is_adjective(phrase: str) -> bool:
    last = phrase.split()[-1].lower() if phrase.split() else ""
    return len(last) > 4 and last.endswith(_ADJECTIVE_ENDINGS)


def knowledge_base(cui_names: Mapping[str, str] | None = None, *, catalog: bool = True) -> KnowledgeBase:
    """The knowledge base from concept names (CUI -> canonical name: ``cui_mapping.csv`` or a
    model's :class:`~medcap.data.ConceptVocabulary` names) and, with ``catalog``, the built-in
    :data:`~medcap.factcheck.lexicon.LEXICON` (real UMLS CUIs with the phrases ROCOv2-style
    captions use: "CT", "computed tomography", "thoracic", ...)."""
    names = {c.strip().upper(): n.strip() for c, n in (cui_names or {}).items() if n and n.strip()}
    words: dict[str, tuple[str, ...]] = {}
    kinds: dict[str, str] = {}
    if catalog:
        for concept in LEXICON.values():
            names.setdefault(concept.cui, concept.name)
            words[concept.cui] = concept.words
            kinds[concept.cui] = concept.kind
    synonyms = {cui: list(dict.fromkeys([name, *words.get(cui, ())])) for cui, name in names.items()}
    qualifiers = frozenset(c for c, k in kinds.items() if k == "location")
    return KnowledgeBase(names, synonyms, exclusive_groups(), words, qualifiers, kinds)


# ---------------------------------------------------------------------------------------
# Mentions: dictionary matching at word boundaries
# ---------------------------------------------------------------------------------------

# The same words as ConceptNameMatcher's: runs of [0-9a-z] in the lower-cased text, so
# "fracture" is one word and "CT" can never match inside it; "X-ray" is "x" "ray".
_WORD = re.compile(r"[0-9a-z]+")


def _lower_same_length(text: str) -> str:
    # str.lower() may lengthen a few characters ("İ"); keep offsets valid by leaving those.
    return "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in text)


@dataclass(frozen=True)
class Mention:
    """A concept phrase found in a caption: ``text == caption[start:end]``."""

    start: int
    end: int
    text: str
    cuis: tuple[str, ...]


class MentionMatcher(ConceptNameMatcher):
    """:class:`ConceptNameMatcher` (longest match first, whole words) with several names per
    concept and character spans (:meth:`find`), so that a phrase can be verified and replaced.
    ``cuis(text)`` is the inherited one and agrees with :meth:`find`."""

    def __init__(self, synonyms: Mapping[str, Iterable[str]]):
        super().__init__({})
        for cui, phrases in synonyms.items():
            for phrase in phrases:
                for variant in _plurals(phrase):
                    words = tuple(_WORD.findall(_lower_same_length(variant)))
                    if words:
                        self.phrases.setdefault(words, set()).add(cui.strip().upper())
        self.max_words = max((len(p) for p in self.phrases), default=0)

    def find(self, text: str) -> list[Mention]:
        """Every concept phrase in ``text``, left to right, longest match first, no overlaps."""
        tokens = list(_WORD.finditer(_lower_same_length(text)))
        found: list[Mention] = []
        for i, n, hit in self.longest_matches([t.group() for t in tokens]):
            start, end = tokens[i].start(), tokens[i + n - 1].end()
            found.append(Mention(start, end, text[start:end], tuple(sorted(hit))))
        return found
