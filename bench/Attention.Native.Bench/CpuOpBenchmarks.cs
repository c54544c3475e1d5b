using Attention.Native.Ops;
using BenchmarkDotNet.Attributes;

namespace Attention.Native.Bench;

/// <summary>The CPU backend's ops at sizes from the issue tracker (Linear at 1024³, RoPE/RMSNorm at one benchmark layer).</summary>
[MemoryDiagnoser]
public class CpuOpBenchmarks
{
    private readonly Backend _cpu = Backend.Cpu;
    private Tensor _x = null!, _w = null!, _y = null!, _dx = null!, _dw = null!;
    private Tensor _q = null!, _norm = null!, _gain = null!;

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(1);
        float[] Values(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        _x = _cpu.FromArray(Values(1024 * 1024), new Shape(1024, 1024));
        _w = _cpu.FromArray(Values(1024 * 1024), new Shape(1024, 1024));
        _y = _cpu.Zeros(new Shape(1024, 1024));
        _dx = _cpu.Zeros(new Shape(1024, 1024));
        _dw = _cpu.Zeros(new Shape(1024, 1024));
        _q = _cpu.FromArray(Values(1024 * 16 * 128), new Shape(1, 1024, 16, 128));
        _norm = _cpu.FromArray(Values(1024 * 2048), new Shape(1024, 2048));
        _gain = _cpu.FromArray(Values(2048), new Shape(2048));
    }

    /// <summary>2·1024³ flops.</summary>
    [Benchmark]
    public void LinearForward1024() => Linear.Forward(_x, _w, null, _y);

    /// <summary>4·1024³ flops (dx and dW).</summary>
    [Benchmark]
    public void LinearBackward1024() => Linear.Backward(_x, _w, _y, _dx, _dw, null);

    [Benchmark]
    public void RopeForwardT1024H16D128() => Rope.Forward(_q, _q);

    [Benchmark]
    public void RmsNormForward1024x2048() => RmsNorm.Forward(_norm, _gain, _norm);

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _x, _w, _y, _dx, _dw, _q, _norm, _gain })
        {
            t.Dispose();
        }
    }
}
