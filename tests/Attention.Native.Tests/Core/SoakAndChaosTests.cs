using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Attention.Native.IO;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Core;

/// <summary>
/// Issue 13 item 7: seeded fuzzing of the config parser and of safetensors headers with hostile shapes (the reader's
/// 750-case corruption fuzz lives in SafeTensorsTests), and a 10,000-iteration soak that keeps managed memory flat.
/// </summary>
public class SoakAndChaosTests
{
    private static readonly LayerConfig[] Samples =
    [
        new GqaConfig { Kind = "mha", DModel = 16, Heads = 4, KvHeads = 4, HeadDim = 4 },
        new GqaConfig { Kind = "gqa", DModel = 16, Heads = 4, KvHeads = 2, HeadDim = 4 },
        new GqaConfig { Kind = "mqa", DModel = 16, Heads = 4, KvHeads = 1, HeadDim = 4 },
        new MlaConfig { DModel = 16, Heads = 2, QLoraRank = 8, KvLoraRank = 8, QkNopeHeadDim = 4, QkRopeHeadDim = 2, VHeadDim = 4 },
        new TpaConfig { DModel = 16, Heads = 2, HeadDim = 4, QRank = 2, KRank = 2, VRank = 2 },
        new SasConfig { DModel = 16, Heads = 2, HeadDim = 4, SimHeads = 4, SimHeadDim = 8 },
        new AgentConfig { DModel = 16, Heads = 2, SeqLen = 9, Agents = 4, DwcKernel = 3 },
        new FlattenConfig { DModel = 16, Heads = 2, SeqLen = 9, DwcKernel = 3 },
        new TransNormerConfig { DModel = 16, Heads = 2, HeadDim = 8, LayerIndex = 1, NumLayers = 4 },
        new MfaConfig { DModel = 16, Heads = 4, HeadDim = 4, QLoraDim = 8 },
    ];

    // Values a careless or hostile config file holds: overflowing products, limits, wrong types.
    private static readonly JsonNode?[] Hostile =
    [
        0, -1, 1, 3, 65536, 46341, int.MaxValue, (long)int.MaxValue + 1, long.MaxValue, 1e300, -1e300, 0.5, 2.000001,
        "4", "", true, false, null, new JsonArray(1, 2), new JsonObject(),
    ];

    [Test]
    public void Fuzzed_configs_parse_or_throw_ArgumentException_naming_a_key()
    {
        foreach (var sample in Samples)
        {
            sample.Validate();
        }
        var random = new Random(13_07);
        int parsed = 0, refused = 0;
        for (int iteration = 0; iteration < 1500; iteration++)
        {
            var sample = Samples[iteration % Samples.Length];
            var json = JsonNode.Parse(sample.ToJson())!.AsObject();
            var keys = json.Select(p => p.Key).ToArray();
            for (int edits = 1 + random.Next(3); edits > 0; edits--)
            {
                string key = keys[random.Next(keys.Length)];
                switch (random.Next(6))
                {
                    case 0: json.Remove(key); break;
                    case 1: json["unknown_" + random.Next(3)] = 1; break;
                    default: json[key] = Hostile[random.Next(Hostile.Length)]?.DeepClone(); break;
                }
            }
            string text = json.ToJsonString();
            if (iteration % 7 == 6)
            {
                text = text[..random.Next(text.Length)]; // truncated files too
            }
            try
            {
                var config = LayerConfig.Parse(sample.Variant, text);
                // A config that parses must be usable: its derived sizes computed without wrapping, its JSON read back the same.
                _ = config.CacheElementsPerToken;
                Assert.That(LayerConfig.Parse(sample.Variant, config.ToJson()), Is.EqualTo(config), $"iteration {iteration}: {text}");
                parsed++;
            }
            catch (ArgumentException e)
            {
                Assert.That(e.Message, Does.Not.Contain("Exception"), $"iteration {iteration}: a clean message");
                Assert.That(e.Message.Length, Is.LessThan(2000), $"iteration {iteration}: one short line");
                refused++;
            }
            catch (Exception e)
            {
                Assert.Fail($"iteration {iteration}: {sample.Variant} config {text} threw {e.GetType().Name} instead of ArgumentException: {e.Message}");
            }
        }
        TestContext.Out.WriteLine($"{parsed} parsed, {refused} refused");
        Assert.That(refused, Is.GreaterThan(500), "the fuzz reaches the checks");
    }

    private static readonly int[][] HostileShapes =
    [
        [2147418113, 429509837, 5], // 2^62 + 1 elements: bytes wrap to 4 (the issue's case)
        [int.MaxValue, int.MaxValue, int.MaxValue],
        [int.MaxValue, int.MaxValue, 2],
        [65536, 65536],
        [1 << 30, 4],
        [0, int.MaxValue, int.MaxValue, int.MaxValue],
        [int.MaxValue, int.MaxValue, int.MaxValue, 0],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3],
        [3], [],
    ];

    [Test]
    public void Safetensors_headers_with_hostile_shapes_read_or_throw_InvalidDataException()
    {
        var random = new Random(2026_12_02);
        string[] dtypes = ["F32", "F16", "BF16", "F64"];
        int read = 0, refused = 0;
        for (int iteration = 0; iteration < 400; iteration++)
        {
            var shape = HostileShapes[random.Next(HostileShapes.Length)];
            string dtype = dtypes[random.Next(dtypes.Length)];
            int size = dtype switch { "F64" => 8, "F32" => 4, _ => 2 };
            // The end offset: what the shape needs (wrapped the way an unchecked product would), a small lie, or a huge one.
            ulong needed = unchecked(shape.Aggregate(1UL, (a, d) => a * (ulong)d) * (ulong)size);
            ulong end = random.Next(4) switch { 0 => needed, 1 => needed & 0xFFFF, 2 => (ulong)random.Next(64), _ => ulong.MaxValue };
            int dataBytes = (int)Math.Min(end, 256UL) + random.Next(2);
            string header = $"{{\"t\":{{\"dtype\":\"{dtype}\",\"shape\":[{string.Join(',', shape)}],\"data_offsets\":[0,{end.ToString(CultureInfo.InvariantCulture)}]}}}}";
            var headerBytes = Encoding.UTF8.GetBytes(header);
            var file = new byte[8 + headerBytes.Length + dataBytes];
            BitConverter.TryWriteBytes(file.AsSpan(0, 8), (ulong)headerBytes.Length);
            headerBytes.CopyTo(file, 8);
            try
            {
                using var content = SafeTensors.Read(file, source: "hostile");
                Assert.That(content.Tensors["t"].ByteCount, Is.EqualTo((long)end), $"iteration {iteration}: a tensor that reads holds exactly its range ({header})");
                read++;
            }
            catch (InvalidDataException)
            {
                refused++;
            }
            catch (Exception e)
            {
                Assert.Fail($"iteration {iteration}: header {header} with {dataBytes} data bytes threw {e.GetType().Name}: {e.Message}");
            }
        }
        TestContext.Out.WriteLine($"{read} read, {refused} refused");
        Assert.That(read, Is.GreaterThan(0), "well-formed small tensors still read");
    }

    [Test]
    public void Ten_thousand_forward_backward_and_decode_iterations_keep_managed_memory_flat()
    {
        var config = new GqaConfig { Kind = "gqa", DModel = 16, Heads = 4, KvHeads = 2, HeadDim = 4 };
        using var layer = (CausalAttentionLayer)AttentionLayer.Create(config, Backend.Cpu, DType.F32);
        layer.InitializeParameters(seed: 3);
        using var x = Backend.Cpu.FromArray(TestData.Normal(4, 2 * 4 * 16).Select(v => (float)v).ToArray(), new Shape(2, 4, 16));
        using var dy = Backend.Cpu.FromArray(TestData.Normal(5, 2 * 4 * 16).Select(v => (float)v).ToArray(), new Shape(2, 4, 16));
        using var token = Backend.Cpu.FromArray(TestData.Normal(6, 2 * 16).Select(v => (float)v).ToArray(), new Shape(2, 1, 16));
        using var cache = layer.CreateCache(2, new CacheOptions(MaxLength: 64));
        void Iteration()
        {
            using (var y = layer.Forward(x))
            using (var pass = layer.ForwardForTraining(x))
            using (var grads = pass.Backward(dy))
            {
            }
            if (cache.Length == 64)
            {
                cache.Reset();
            }
            cache.DecodeStep(token).Dispose();
        }
        const int warmup = 1000, iterations = 10_000;
        for (int i = 0; i < warmup; i++)
        {
            Iteration();
        }
        long before = SettledMemory();
        var samples = new List<long>();
        for (int i = 1; i <= iterations; i++)
        {
            Iteration();
            if (i % 2500 == 0)
            {
                samples.Add(SettledMemory());
            }
        }
        TestContext.Out.WriteLine($"managed memory: {before} bytes after warm-up, then {string.Join(", ", samples)}");
        // Flat: no more than 256 KiB above the warmed-up level at any sample (a leak of one tensor per iteration is ≥ 40 KB per 1000).
        Assert.That(samples.Max() - before, Is.LessThan(256 * 1024), $"memory grew from {before} to {string.Join(", ", samples)}");
    }

    private static long SettledMemory()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return GC.GetTotalMemory(forceFullCollection: true);
    }
}
