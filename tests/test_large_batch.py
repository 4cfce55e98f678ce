"""benchmarks.large_batch without a GPU: its table and its argument check."""
import pytest

from benchmarks import large_batch

META = dict(gpu="NVIDIA H200", command="python -m benchmarks.large_batch", date="2026-12-01", method="graphs",
            group_size=128)


def row(M, p, chunks, dequant):
    return dict(layer="70B o", N=8192, K=8192, M=M, bits=p, fp16_us=40.0, chunks_us=chunks, launches=-(-M // 16),
                dequant_us=dequant, ratio=dequant / chunks)


def test_table_lists_both_paths_and_where_the_launches_stop_winning():
    rows = [row(32, 2, 60.0, 150.0), row(32, 4, 100.0, 160.0), row(96, 2, 180.0, 150.0), row(96, 4, 300.0, 160.0)]
    md = large_batch.markdown(META, rows)
    assert "| 70B o | 32 | 2 | 40.0 | 60.0 / 100.0 | 150.0 / 160.0 | 2.50 / 1.60 |" in md
    assert "| 70B o | 96 | 6 | 40.0 | 180.0 / 300.0 | 150.0 / 160.0 | 0.83 / 0.53 |" in md
    assert "faster in 2 of 4 cases" in md and "2-bit 2 / 6, 4-bit 2 / 6" in md


def test_batches_must_exceed_one_launch(capsys):
    with pytest.raises(SystemExit):
        large_batch.main(["--batches", "16", "32"])
    assert "batches: each must exceed 16" in capsys.readouterr().err


def test_chunk_rule_takes_launches_of_16_on_larger_layers_only():
    from gpu.kernels import IMMA_CHUNK_RULE, imma_chunk_launches

    assert [imma_chunk_launches(1, N, K) for N, K in ((4096, 14336), (8192, 8192), (28672, 4096))] == [2, 3, 4]
    assert [imma_chunk_launches(2, N, K) for N, K in ((28672, 4096), (8192, 28672))] == [2, 3]
    assert imma_chunk_launches(3, 57344, 8192) == 2
    assert imma_chunk_launches(4, 28672, 4096) == 1  # 8B gate+up: below the 4-bit bound
    assert imma_chunk_launches(4, 8192, 28672) == 2  # 70B down
    assert all(imma_chunk_launches(p, 4096, 4096) == 1 for p in (1, 2, 3, 4))
    for p, tiers in IMMA_CHUNK_RULE.items():
        assert list(tiers) == sorted(tiers) and all(l1 < l2 for (_, l1), (_, l2) in zip(tiers, tiers[1:]))
        for i, (fewest, launches) in enumerate(tiers):  # each bound is inclusive
            below = tiers[i - 1][1] if i else 1
            assert imma_chunk_launches(p, fewest // 4096, 4096) == launches
            assert imma_chunk_launches(p, fewest // 4096 - 1, 4096) == below


def test_bits_must_be_the_int8_kernels(capsys):
    with pytest.raises(SystemExit):
        large_batch.main(["--bits", "1", "5"])
    assert "bits: each must be 1 to 4" in capsys.readouterr().err
