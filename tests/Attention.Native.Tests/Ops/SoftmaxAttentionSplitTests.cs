using Attention.Native.Ops;

namespace Attention.Native.Tests.Ops;

/// <summary>The split-KV plan of the CUDA attention forward (a pure function, checked without a GPU).</summary>
public class SoftmaxAttentionSplitTests
{
    [TestCase(132, 8, 5000)]
    [TestCase(132, 16, 1000)]
    [TestCase(108, 1, 32768)]
    [TestCase(132, 64, 600)]
    [TestCase(1, 1, 100000)]
    public void Splits_cover_every_key_once_in_tile_multiples(int multiprocessors, long blocks, int keys)
    {
        var (splits, perSplit) = SoftmaxAttentionCuda.PlanSplits(multiprocessors, blocks, keys);
        Assert.Multiple(() =>
        {
            Assert.That(splits, Is.GreaterThanOrEqualTo(1));
            Assert.That((long)splits * perSplit, Is.GreaterThanOrEqualTo(keys), "every key is in a split");
            Assert.That((long)(splits - 1) * perSplit, Is.LessThan(keys), "no split is empty");
            if (splits > 1)
            {
                Assert.That(perSplit % 32, Is.Zero, "splits start on key-tile boundaries");
                Assert.That(perSplit, Is.GreaterThanOrEqualTo(256), "a split is worth a block");
                Assert.That(blocks * splits, Is.LessThanOrEqualTo(4L * multiprocessors), "no more blocks than the device needs");
            }
        });
    }

    [Test]
    public void A_decode_step_against_a_long_cache_is_split_and_a_full_prefill_is_not()
    {
        Assert.That(SoftmaxAttentionCuda.PlanSplits(132, 8, 32768).Splits, Is.GreaterThan(16));
        Assert.That(SoftmaxAttentionCuda.PlanSplits(132, 64 * 32 * 8, 1024).Splits, Is.EqualTo(1));
        Assert.That(SoftmaxAttentionCuda.PlanSplits(132, 8, 300).Splits, Is.EqualTo(1), "short caches are not worth a combine pass");
    }

    [TestCase(132, 4, 32768)]  // GQA decode (G 4, B 1)
    [TestCase(132, 16, 4096)]
    [TestCase(132, 1, 100)]    // shorter than one split
    [TestCase(132, 2048, 32768)]
    [TestCase(1, 1, 1)]
    public void Decode_splits_cover_every_key_once_in_step_multiples(int multiprocessors, long blocks, int keys)
    {
        var (splits, perSplit) = SoftmaxAttentionDecodeCuda.PlanSplits(multiprocessors, blocks, keys);
        Assert.Multiple(() =>
        {
            Assert.That(splits, Is.GreaterThanOrEqualTo(1));
            Assert.That((long)splits * perSplit, Is.GreaterThanOrEqualTo(keys), "every key is in a split");
            Assert.That((long)(splits - 1) * perSplit, Is.LessThan(keys), "no split is empty");
            Assert.That(perSplit % 64, Is.Zero, "splits start on a multiple of the kernel's widest step");
            if (splits > 1)
            {
                Assert.That(perSplit, Is.GreaterThanOrEqualTo(128), "a split is worth a block");
                Assert.That(blocks * (splits - 1), Is.LessThan(4L * multiprocessors), "no more blocks than the device needs");
            }
        });
    }

    [Test]
    public void A_gqa_decode_step_fills_the_device()
    {
        // H 16, G 4, B 1 against 32k keys on 132 multiprocessors: 4 blocks without splits, about 4 per multiprocessor with them.
        var (splits, _) = SoftmaxAttentionDecodeCuda.PlanSplits(132, 4, 32768);
        Assert.That(4L * splits, Is.InRange(2L * 132, 5L * 132));
    }

    [Test]
    public void An_mfa_decode_step_plans_as_its_emulation_case_launches()
    {
        // Step-3's decode step: 64 query heads on one KV head of width 256, one query row: 64 packed rows in 8 row blocks of
        // 8, one launch. tests/emulation/attention_decode_harness.cpp launches these plans (launch_plans.h) for an H200.
        Assert.That(SoftmaxAttentionDecodeCuda.Widths, Does.Contain((256, 256)));
        Assert.That(SoftmaxAttentionDecodeCuda.RowsPerBlock(64), Is.EqualTo(8));
        Assert.That(SoftmaxAttentionDecodeCuda.PlanSplits(132, 8, 650), Is.EqualTo((4, 192)));
        Assert.That(SoftmaxAttentionDecodeCuda.PlanSplits(132, 2, 270), Is.EqualTo((2, 192)));
    }

    [TestCase(1, 1)]
    [TestCase(2, 4)]
    [TestCase(4, 4)]
    [TestCase(5, 8)]
    [TestCase(16, 8)]
    [TestCase(64, 8)]
    public void Decode_blocks_take_the_smallest_row_count_that_fits(int packedRows, int expected) =>
        Assert.That(SoftmaxAttentionDecodeCuda.RowsPerBlock(packedRows), Is.EqualTo(expected));
}
