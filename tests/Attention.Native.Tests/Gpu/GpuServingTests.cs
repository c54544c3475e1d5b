using Attention.Native.Inference;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// A <see cref="ServingPool"/> on the CUDA backend: the same continuous-batching run as on the CPU gives the same outputs,
/// and once warmed up a decode step takes no memory from the driver (the backend's caching allocator serves every
/// temporary; the pages were allocated with the pool).
/// </summary>
[Category("Gpu")]
public class GpuServingTests
{
    private static readonly string[] Configs =
    [
        """gqa|{"d_model": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16, "rope": true}""",
        """mla|{"d_model": 64, "n_heads": 4, "q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16}""",
        """tpa|{"d_model": 64, "n_heads": 4, "head_dim": 16, "q_rank": 6, "k_rank": 2, "v_rank": 2, "rope": true}""",
        """sas|{"d_model": 64, "n_heads": 4, "head_dim": 16, "sim_heads": 8, "sim_head_dim": 32, "kernel_size": 3, "rope": true}""",
        """transnormer|{"d_model": 64, "n_heads": 4, "head_dim": 16, "layer_idx": 0, "num_layers": 2}""",
        """mfa|{"d_model": 64, "n_heads": 8, "head_dim": 16, "q_lora_dim": 32, "rope": true}""",
    ];

    private static IEnumerable<TestCaseData> Cases() =>
        from config in Configs
        from dtype in GpuPair.StorageTypes
        select new TestCaseData(config, dtype).SetName($"ServingPool {config.Split('|')[0]} {dtype}");

    [TestCaseSource(nameof(Cases))]
    public void A_serving_run_on_the_gpu_equals_the_cpu(string config, DType dtype)
    {
        var gpu = Requires.CudaDevice();
        var parts = config.Split('|');
        var layerConfig = LayerConfig.Parse(parts[0], parts[1]);
        using var cpuLayer = (CausalAttentionLayer)AttentionLayer.Create(layerConfig, Backend.Cpu, dtype);
        cpuLayer.InitializeParameters(seed: 9);
        using var gpuLayer = (CausalAttentionLayer)AttentionLayer.Create(layerConfig, gpu, dtype);
        gpuLayer.LoadParameters(cpuLayer.Parameters);
        var expected = Run(cpuLayer, out _);
        var actual = Run(gpuLayer, out long allocationsInSteadyDecode);
        for (int i = 0; i < expected.Count; i++)
        {
            Precision.AssertClose($"output {i}", dtype, "serving run", expected[i], actual[i]);
        }
        Assert.That(allocationsInSteadyDecode, Is.EqualTo(0), "decode steps after warm-up allocate nothing from the driver");
    }

    // Three sequences of different lengths: prefill (one chunked), a fork, mixed decode steps, a release; returns every output.
    private static List<float[]> Run(CausalAttentionLayer layer, out long steadyAllocations)
    {
        var backend = layer.Backend;
        int width = layer.Config.DModel, seed = 40;
        var outputs = new List<float[]>();
        using var pool = new ServingPool(layer, new ServingPoolOptions(TokenBudget: 2048, PageSize: 16));
        Tensor Tokens(int rows, int n) => backend.FromArray(TestData.NormalSingle(seed++, (long)rows * n * width), new Shape(rows, n, width), layer.DType);
        var ids = new List<SequenceId>();
        foreach (int length in new[] { 37, 300, 5 })
        {
            var id = pool.Admit();
            using var prompt = Tokens(1, length);
            using var y = pool.Prefill(id, prompt, chunkSize: length > 100 ? 128 : null);
            outputs.Add(y.ToArray());
            ids.Add(id);
        }
        ids.Add(pool.Fork(ids[0]));
        void Decode()
        {
            using var x = Tokens(ids.Count, 1);
            using var y = pool.Decode([.. ids], x);
            outputs.Add(y.ToArray());
        }
        Decode();
        Decode();
        pool.Release(ids[1]);
        ids.RemoveAt(1);
        Decode();
        Decode();
        long before = backend is CudaBackend cuda ? cuda.DriverAllocations : 0;
        for (int i = 0; i < 4; i++)
        {
            Decode();
        }
        steadyAllocations = (backend is CudaBackend after ? after.DriverAllocations : 0) - before;
        return outputs;
    }
}
