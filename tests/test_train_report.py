"""qelm.train.report: the verdict says, from the measured perplexities alone, how the QELM compares with
each classical model."""

from qelm.train.report import verdict


def test_verdict_says_how_the_qelm_compares_with_each_classical_model():
    def figures(q, t, m):
        return {"qelm": {"val_perplexity": q, "parameters": 400, "circuit_parameters": 48},
                "twin": {"val_perplexity": t, "parameters": 800, "circuit_parameters": 0},
                "matched": {"val_perplexity": m, "parameters": 402, "circuit_parameters": 0}}

    unigram = {"perplexity": 9.0}
    winner, text = verdict(figures(5.0, 4.0, 6.0), unigram)
    assert winner == "twin"
    assert ("the QELM lost to its classical twin, which has 2.00x its parameters: validation perplexity 5.000 vs "
            "4.000") in text
    assert "the QELM beat the equally-sized classical model (402 parameters vs the QELM's 400, +0.5%)" in text
    assert "better than a classical model of its own size, but not than the larger twin" in text
    winner, text = verdict(figures(5.0, 4.0, 4.5), unigram)
    assert winner == "twin" and "the QELM lost to the equally-sized" in text
    assert "at equal parameter count the classical model did better" in text
    winner, text = verdict(figures(3.0, 4.0, 6.0), unigram)
    assert winner == "qelm" and "classical models of its own size and larger" in text
    winner, text = verdict(figures(5.0, 5.0001, 9.5), unigram)
    assert winner == "tie" and "the QELM tied with its classical twin" in text
    assert "not better than the unigram baseline (9.000): the parameter-matched classical model (9.500)" in text
    only_twin = {n: f for n, f in figures(5.0, 4.0, 6.0).items() if n != "matched"}
    winner, text = verdict(only_twin, unigram)
    assert winner == "twin" and "does not tell size from circuits" in text and "equally-sized" not in text
