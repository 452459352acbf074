"""The structured prompt shared by every task, and the chat-template step.

The paper (Section 3.3) adopts the structured format of Karpinska et al. (2024): the model is
told what the task is, given the question, the context, the question again, and asked to reason
step by step before a final answer line. Its Appendix E (the literal text) did not survive
extraction, so the wording below is ours; what it keeps from the paper is the structure:

    instructions -> question -> <context> ... </context> -> question again
    -> "reason step by step, then end with a final line `Answer: ...`"

Stating the question before and after the context is why the paper's query lengths (its
Table 5) are a few hundred tokens: a model reading left to right knows what to look for,
and the repeat sits next to where generation starts.

Every task builds its text with :func:`build_prompt`, so the format is the same for all nine,
and :func:`to_model_input` applies the tokenizer's chat template (if it has one) so that the
stored prompt is exactly what the engine feeds the model.

Two answer formats, chosen per task by its ``answer_format`` parameter:

- ``authors`` (the default): the paper authors' released prompt (:func:`build_tagged_prompt`),
  an explanation in ``<explanation>`` tags, then the answer in ``<answer>`` tags in a format of
  each task's own (numbered lines for NIAH, CWE and Story Retrieval, names separated by spaces
  for VT, ...), read by the authors' extraction rules (:mod:`.tagged_answers`);
- ``structured``: the project's own format (:func:`build_prompt`), one shared shape for all
  nine tasks ending in a final ``Answer:`` line, read by the tolerant extractor of :mod:`.answers`.
"""

from __future__ import annotations

from collections.abc import Sequence

ANSWER_MARKER = "Answer:"
ANSWER_FORMATS = ("authors", "structured")

_TEMPLATE = """{instructions}

I will state the question before the context and again after it.

Question: {question}

<context>
{context}
</context>

Question: {question}

First reason step by step about the context: say where you found the relevant information and \
how it leads to the answer. Then end your response with one final line in exactly this format:
{marker} {answer_format}

Rules for the final line:
{rules}"""


def build_prompt(
    instructions: str,
    context: str,
    question: str,
    answer_format: str,
    rules: Sequence[str] = (),
) -> str:
    """The task text in the shared structured format (no chat template applied).

    instructions:  what the task is, one short paragraph
    context:       the long part (documents, key-value pairs, a story, ...)
    question:      what to answer; stated before and after the context
    answer_format: what follows ``Answer:`` on the final line, e.g. ``<value 1>, <value 2>``
    rules:         extra one-line rules for the answer line, rendered as a bullet list
    """
    bullet_rules = [
        f"- {rule}"
        for rule in (
            *rules,
            f"The line starting with '{ANSWER_MARKER}' must be the last line of your response.",
        )
    ]
    return _TEMPLATE.format(
        instructions=instructions.strip(),
        question=question.strip(),
        context=context,
        marker=ANSWER_MARKER,
        answer_format=answer_format.strip(),
        rules="\n".join(bullet_rules),
    )


def check_answer_format(task: str, answer_format: str) -> None:
    """Stop with one sentence when a task's ``answer_format`` is not one of :data:`ANSWER_FORMATS`."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(
            f"{task} answer_format must be one of {', '.join(ANSWER_FORMATS)}, got {answer_format!r}."
        )


# The authors' release words its prompt so; its wording is the definition this format follows.
_TAGGED_TEMPLATE = """{intro}

Below {is_are} your {questions}. I will state {it_them} both before and after the context.

<{tag}>
{question}
</{tag}>

<context>
{context}
</context>

<{tag}_repeated>
{question}
</{tag}_repeated>

Instructions:
1. First, provide a brief explanation of your reasoning process. Explain how you identified
   the relevant information from the context and how you determined your answer.
2. Then, provide your final answer following this exact format:
<answer>
{answer_format}
</answer>

Your response must follow this structure exactly:
<explanation>
Your explanation here...
</explanation>
<answer>
Your answer here...
</answer>

Important:
{extra_instructions}
- Keep your explanations clear, coherent, concise, and to the point.
- Do not include any additional text, explanations, or reasoning in the answer section. \
Follow the answer format exactly.
"""


def build_tagged_prompt(
    intro: str,
    context: str,
    question: str,
    answer_format: str,
    extra_instructions: Sequence[str] = (),
    several_questions: bool = False,
) -> str:
    """The task text in the paper authors' format (no chat template applied).

    intro:              what the task is, one paragraph
    question:           stated in ``<question>`` tags before and after the context
                        (``<questions>`` when ``several_questions``)
    answer_format:      the template of the answer section, shown inside ``<answer>`` tags
    extra_instructions: task rules, rendered as the first bullets under "Important:"
    """
    return _TAGGED_TEMPLATE.format(
        intro=intro.strip(),
        is_are="are" if several_questions else "is",
        questions="questions" if several_questions else "question",
        it_them="them" if several_questions else "it",
        tag="questions" if several_questions else "question",
        question=question.strip(),
        context=context,
        answer_format=answer_format.strip(),
        extra_instructions="\n".join(f"- {rule}" for rule in extra_instructions),
    )


def has_chat_template(tokenizer) -> bool:
    """Whether the tokenizer carries a chat template (instruction-tuned models do)."""
    return bool(getattr(tokenizer, "chat_template", None))


def to_model_input(tokenizer, text: str) -> str:
    """The exact string the engine tokenizes: ``text`` as one user turn, chat template applied.

    With a chat template the result ends with the assistant's generation prompt
    (``add_generation_prompt=True``); without one (the tiny test tokenizer, base models) the
    text is returned as it is. Either way it starts with BOS where the tokenizer wants one.
    """
    if not has_chat_template(tokenizer):
        return with_bos(tokenizer, text)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    if not isinstance(rendered, str):  # some versions return a list for batch inputs
        raise TypeError(f"apply_chat_template returned {type(rendered).__name__}, expected str.")
    return with_bos(tokenizer, rendered)


def with_answer_prefix(tokenizer, model_input: str, answer_prefix: str) -> str:
    """The model input followed by the start of the answer it should continue: right after the
    assistant's generation prompt with a chat template, on a line of its own after plain text."""
    if not answer_prefix:
        return model_input
    return model_input + ("" if has_chat_template(tokenizer) else "\n") + answer_prefix


def wants_bos(tokenizer) -> bool:
    """Whether the tokenizer starts every input with its BOS token (its config's ``add_bos_token``),
    as a model such as Gemma needs: without BOS it writes degenerate text."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


def with_bos(tokenizer, text: str) -> str:
    """``text`` with the BOS token's text in front where the tokenizer wants BOS and ``text`` (e.g. a
    rendered chat template) does not already start with it. Engines tokenize prompts without special
    tokens, so the prompt itself carries the BOS, and its token counts include it."""
    if wants_bos(tokenizer) and not text.startswith(tokenizer.bos_token):
        return tokenizer.bos_token + text
    return text


def count_tokens(tokenizer, prompt: str) -> int:
    """Tokens of ``prompt`` exactly as the engine counts them (no special tokens added)."""
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


class TokenCounter:
    """Counts tokens like :func:`count_tokens`, faster when it safely can.

    A fast tokenizer's Rust backend returns an ``Encoding`` whose length needs no Python list
    of ids; at 128K tokens that list alone costs ~0.2 s. The first prompt is counted both ways
    and the fast path is used only if they agree, so the count stays the engine's count.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._checked = self._backend is None

    def __call__(self, prompt: str) -> int:
        if not self._checked:
            self._checked = True
            exact = count_tokens(self.tokenizer, prompt)
            if len(self._backend.encode(prompt, add_special_tokens=False)) != exact:
                self._backend = None
            return exact
        if self._backend is None:
            return count_tokens(self.tokenizer, prompt)
        return len(self._backend.encode(prompt, add_special_tokens=False))
