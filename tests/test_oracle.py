"""experiments.oracle: the lookup-table oracle counts exactly, its search finds the true argmax, and bad
input is refused with an actionable message. Everything runs on tiny hand-made or synthetic data,
except one check of ``--search 1`` on the MNIST test split."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from experiments.oracle import (
    check_levels,
    check_positions,
    check_search_size,
    fit_table,
    oracle_report,
    pair_correct,
    parse_pixel,
    parse_pixels,
    quantise,
    rank,
    search,
    single_correct,
)

# A hand-made dataset of 2 x 2 images (4 pixels, flat indices 0..3). Pixel 0 takes grey levels
# 0 / 100 / 200, pixel 1 is 0 or 255, pixels 2 and 3 are constant 7.
#                 pixel0 pixel1 label
TINY = [
    (0, 0, 3),
    (0, 0, 3),
    (0, 0, 5),
    (0, 255, 5),
    (100, 255, 5),
    (100, 255, 2),  # code (100, 255) holds one 5 and one 2: a tie, majority = 2 (smaller class)
    (200, 0, 9),
    (200, 0, 9),
    (200, 255, 1),
]


def tiny_data():
    images = torch.tensor([[[p0, p1], [7, 7]] for p0, p1, _ in TINY], dtype=torch.uint8)
    labels = torch.tensor([label for _, _, label in TINY])
    return images, labels


def brute_force_correct(images, labels, positions, levels):
    """In-sample correct count by a plain Python dictionary: code -> class counts."""
    q = ((images.reshape(len(images), -1).long() * levels) // 256).tolist()
    table: dict[tuple, list[int]] = {}
    for row, label in zip(q, labels.tolist()):
        table.setdefault(tuple(row[p] for p in positions), [0] * 10)[label] += 1
    return sum(max(counts) for counts in table.values())


def sparse_images(n, pixels, levels_used, seed, on_probability=0.3):
    """Random ``uint8`` images, mostly 0 (like MNIST), with labels that depend on a few pixels."""
    generator = torch.Generator().manual_seed(seed)
    grey = torch.tensor(levels_used, dtype=torch.uint8)
    values = grey[torch.randint(len(levels_used), (n, pixels), generator=generator)]
    on = torch.rand(n, pixels, generator=generator) < on_probability
    images = torch.where(on, values, torch.zeros_like(values))
    noise = torch.randint(10, (n,), generator=generator)
    labels = torch.where(
        torch.rand(n, generator=generator) < 0.6, (images[:, 1].long() // 40 + images[:, 3].long() // 60) % 10, noise
    )
    return images, labels


def test_tiny_table_counts_by_hand():
    images, labels = tiny_data()
    table = fit_table(images, labels, [0, 1])
    # distinct codes in lexicographic order, with the class histograms counted by hand
    assert table.codes.tolist() == [[0, 0], [0, 255], [100, 255], [200, 0], [200, 255]]
    expected = torch.zeros(5, 10, dtype=torch.int64)
    expected[0, 3], expected[0, 5] = 2, 1
    expected[1, 5] = 1
    expected[2, 5], expected[2, 2] = 1, 1
    expected[3, 9] = 2
    expected[4, 1] = 1
    assert torch.equal(table.counts, expected)
    assert table.majority.tolist() == [3, 5, 2, 9, 1]  # the (100, 255) tie goes to class 2
    assert table.fallback == 5  # class 5 occurs 3 times, more than any other
    # in-sample: 2 + 1 + 1 + 2 + 1 = 7 of 9
    assert table.in_sample_correct == 7
    assert table.evaluate(images, labels) == {"correct": 7, "size": 9, "accuracy": 7 / 9, "unseen": 0}
    assert table.predict(images).tolist() == [3, 3, 3, 5, 2, 2, 9, 9, 1]
    assert table.joint_codes().tolist() == [0, 255, 100 * 256 + 255, 200 * 256, 200 * 256 + 255]


def test_tiny_table_single_pixel_and_levels():
    images, labels = tiny_data()
    # pixel 0 alone: code 0 -> {3: 2, 5: 2} (tie -> 3, 2 correct), 100 -> {5, 2} (tie -> 2, 1),
    # 200 -> {9: 2, 1: 1} (-> 9, 2): 5 correct
    table = fit_table(images, labels, [0])
    assert table.majority.tolist() == [3, 2, 9]
    assert table.in_sample_correct == 5
    # levels 2: 0 and 100 share bin 0 -> {3: 2, 5: 3, 2: 1} (5 wins, 3 correct); 200 -> bin 1 (2 correct)
    table = fit_table(images, labels, [0], levels=2)
    assert table.codes.tolist() == [[0], [1]]
    assert table.counts.sum(dim=1).tolist() == [6, 3]
    assert table.in_sample_correct == 5
    assert table.majority.tolist() == [5, 9]
    # a constant pixel: one code, the majority class (5) is right 3 times
    assert fit_table(images, labels, [2]).in_sample_correct == 3
    # levels 1: everything in one bin, whatever the pixels
    assert fit_table(images, labels, [0, 1], levels=1).in_sample_correct == 3


def test_heldout_unseen_codes_predict_the_fitting_majority():
    images, labels = tiny_data()
    table = fit_table(images, labels, [0, 1])
    heldout = torch.tensor(
        [[[0, 0], [0, 0]], [[100, 0], [0, 0]], [[50, 50], [0, 0]], [[200, 0], [0, 0]]], dtype=torch.uint8
    )
    assert table.predict(heldout).tolist() == [3, 5, 5, 9]  # (100, 0) and (50, 50) are unseen -> 5
    result = table.evaluate(heldout, torch.tensor([3, 5, 4, 1]))
    assert result == {"correct": 2, "size": 4, "accuracy": 0.5, "unseen": 2}


def test_quantisation_boundaries():
    grey = torch.arange(256, dtype=torch.uint8).view(1, 256)
    assert torch.equal(quantise(grey, 256), grey)
    assert quantise(grey, 1).unique().tolist() == [0]
    two = quantise(grey, 2)[0]
    assert two[127] == 0 and two[128] == 1 and two[0] == 0 and two[255] == 1
    four = quantise(grey, 4)[0]
    assert [int(four[v]) for v in (63, 64, 127, 128, 191, 192, 255)] == [0, 1, 1, 2, 2, 3, 3]
    three = quantise(grey, 3)[0]  # floor(v * 3 / 256): boundaries at 85.33 and 170.67
    assert [int(three[v]) for v in (85, 86, 170, 171, 255)] == [0, 1, 1, 2, 2]
    for levels in (1, 2, 3, 5, 16, 100, 255, 256):
        q = quantise(grey, levels)[0].long()
        assert torch.equal(q, torch.div(torch.arange(256) * levels, 256, rounding_mode="floor"))
        assert int(q.max()) == levels - 1 and bool((q.diff() >= 0).all())


def test_search_finds_the_true_argmax_by_brute_force():
    images, labels = sparse_images(400, 7, [0, 40, 80, 120, 200, 255], seed=1)
    for levels in (256, 4, 2, 1):
        singles = {(p,): brute_force_correct(images, labels, [p], levels) for p in range(7)}
        pairs = {
            pair: brute_force_correct(images, labels, list(pair), levels)
            for pair in itertools.combinations(range(7), 2)
        }
        assert single_correct(images, labels, levels).tolist() == [singles[(p,)] for p in range(7)]
        for method in ("sparse", "dense"):
            scores = pair_correct(images, labels, levels, method=method)
            for (a, b), correct in pairs.items():
                assert int(scores[a, b]) == correct
            below = torch.tril_indices(7, 7)
            assert bool((scores[below[0], below[1]] == -1).all())
        for k, table in ((1, singles), (2, pairs)):
            best = max(table.values())
            found = search(images, labels, k, levels, top=3)
            assert found[0][1] == best
            assert found[0][0] == min(key for key, value in table.items() if value == best)  # ties: smallest
            assert [c for _, c in found] == sorted(table.values(), reverse=True)[:3]


def test_sparse_pair_search_is_exact_on_dense_data():
    # the sparse method only skips work on background (bin 0) pixels; it must stay exact without any
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(1, 256, (300, 2, 3), dtype=torch.uint8, generator=generator)
    labels = torch.randint(10, (300,), generator=generator)
    for levels in (256, 3):
        sparse = pair_correct(images, labels, levels, method="sparse")
        assert torch.equal(sparse, pair_correct(images, labels, levels, method="dense"))
        assert int(sparse[0, 5]) == brute_force_correct(images, labels, [0, 5], levels)


def test_sparse_pair_search_matches_dense_on_mnist(test_split):
    # 400 real digits, the central 10 x 10 pixels: 4,950 pairs
    images = test_split.images[:400, 9:19, 9:19]
    labels = test_split.labels[:400]
    for levels in (4, 2):
        sparse = pair_correct(images, labels, levels, method="sparse")
        assert torch.equal(sparse, pair_correct(images, labels, levels, method="dense"))
        for a, b in ((0, 99), (44, 45), (45, 55)):
            assert int(sparse[a, b]) == brute_force_correct(images, labels, [a, b], levels)
    sparse = pair_correct(images, labels, 256)
    for a, b in ((44, 47), (23, 76)):
        assert int(sparse[a, b]) == brute_force_correct(images, labels, [a, b], 256)


def test_rank_breaks_ties_by_smallest_position():
    assert rank(torch.tensor([3, 5, 5, 1]), 1, 3) == [((1,), 5), ((2,), 5), ((0,), 3)]
    scores = torch.full((3, 3), -1)
    scores[0, 1], scores[0, 2], scores[1, 2] = 4, 6, 6
    assert rank(scores, 2, 3) == [((0, 2), 6), ((1, 2), 6), ((0, 1), 4)]


def test_best_single_pixel_matches_direct_evaluation(test_split):
    report = oracle_report(search_k=1, levels=256, fit="test", top=2)
    best = report["results"][0]
    assert report["heldout"] == "train"
    direct = fit_table(test_split.images, test_split.labels, best["pixels"])
    assert direct.in_sample_correct == best["in_sample_correct"]
    assert direct.evaluate(test_split.images, test_split.labels)["correct"] == best["in_sample_correct"]
    scores = single_correct(test_split.images, test_split.labels, 256)
    assert int(scores.max()) == best["in_sample_correct"] == int(scores[best["pixels"][0]])
    json.dumps(report)  # JSON-serialisable as written by experiments/oracle.py


def test_pixel_parsing():
    assert parse_pixel("406") == 406
    assert parse_pixel("14,14") == 406
    assert parse_pixel("(14, 17)") == 409
    assert parse_pixels(["406", "14,17"]) == [406, 409]


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: parse_pixel("784"), ["784", "out of range", "0..783"]),
        (lambda: parse_pixel("-1"), ["-1", "out of range", "0..783"]),
        (lambda: parse_pixel("14,28"), ["(14, 28)", "out of range", "0..27"]),
        (lambda: parse_pixel("a,b"), ["Cannot read", "14,14"]),
        (lambda: parse_pixels(["406", "14,14"]), ["406", "twice"]),
        (lambda: check_positions([]), ["No pixel", "--pixels"]),
        (lambda: check_positions([4], num_pixels=4), ["4", "out of range", "0..3"]),
        (lambda: check_levels(0), ["levels", "1..256", "--levels"]),
        (lambda: check_levels(257), ["levels", "1..256", "--levels"]),
        (lambda: check_levels(2.5), ["levels", "1..256"]),
        (lambda: check_search_size(3), ["1 or 2", "--search"]),
        (lambda: check_search_size(0), ["1 or 2", "--search"]),
        (lambda: fit_table(*tiny_data(), [4]), ["4", "out of range", "0..3"]),
        (lambda: fit_table(*tiny_data(), [0], levels=300), ["levels", "1..256"]),
        (lambda: search(*tiny_data(), 3), ["1 or 2", "--search"]),
        (lambda: search(*tiny_data(), 2, levels=0), ["levels", "1..256"]),
        (lambda: oracle_report(), ["exactly one", "--search"]),
        (lambda: oracle_report(pixels=[800]), ["800", "out of range"]),
        (lambda: oracle_report(search_k=5), ["1 or 2"]),
        (lambda: oracle_report(pixels=[406], fit="valid"), ["valid", "train"]),
    ],
)
def test_bad_input_names_problem_and_fix(call, words):
    with pytest.raises(ValueError) as error:
        call()
    for word in words:
        assert word in str(error.value)


def test_script_prints_and_writes_json(tmp_path, capsys, test_split):
    import experiments.oracle as script

    out = tmp_path / "oracle.json"
    script.main(script.Args(pixels=("14,14", "409"), levels=4, fit="test", device="cpu", json=str(out)))
    written = json.loads(out.read_text())
    entry = written["results"][0]
    assert entry["pixels"] == [406, 409] and entry["ij"] == [[14, 14], [14, 17]]
    assert (
        entry["in_sample_correct"] == fit_table(test_split.images, test_split.labels, [406, 409], 4).in_sample_correct
    )
    assert written["heldout"] == "train" and written["heldout_size"] == 60_000
    assert "406 409" in capsys.readouterr().out
