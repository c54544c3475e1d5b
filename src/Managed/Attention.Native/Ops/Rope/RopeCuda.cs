using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops;

/// <summary>CUDA launcher of <see cref="Rope"/> (cuda/rope.cu): one block per (b, t), threads over coordinate pairs; a ragged batch's
/// per-token positions go to the device in stream order (<see cref="CudaBackend.UploadLaunchIndices"/>).</summary>
internal static class RopeCuda
{
    private static readonly KernelNames ForwardKernel = new("rope_forward");
    private static readonly KernelNames BackwardKernel = new("rope_backward");

    public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes("rope.cu", ForwardKernel.Template, BackwardKernel.Template);

    public static void Apply(CudaBackend backend, Tensor x, Tensor y, RopeOptions options, TokenPositions positions, bool inverse)
    {
        var s = x.Shape;
        int batch = s[0], seq = s[1], heads = s.Rank == 4 ? s[2] : 1, width = s[-1];
        int rotary = options.RotaryWidth(width);
        long rows = (long)batch * seq;
        if (rows == 0 || heads == 0 || width == 0)
        {
            return;
        }
        bool copies = rotary < width && !ReferenceEquals(x, y);
        int threads = Math.Clamp(RoundUp32(Math.Max(rotary / 2, copies ? width : 1)), 32, 256);
        var args = new KernelArgs(stackalloc byte[160], stackalloc int[20]);
        args.Add(Ptr(y));
        args.Add(Ptr(x));
        args.Add(seq);
        args.Add(heads);
        args.Add(width);
        args.Add(options.RotaryOffset);
        args.Add(rotary);
        args.Add(options.Style == RopeStyle.Interleaved ? 1 : 0);
        args.Add(positions.Offset);
        args.Add(backend.PositionsOnDevice(positions)); // a ragged batch: each row's own position
        args.Add(options.Base);
        // YaRN: the kernel computes θ_j from the ramp's ends as RopeScaling.Interpolate does; unscaled, θ_j = base^(-2j/n) as before.
        var (low, high) = options.Scaling?.Ramp(rotary, options.Base) ?? (0.0, 1.0);
        args.Add(options.Scaling is null ? 0 : 1);
        args.Add(options.Scaling?.Factor ?? 1.0);
        args.Add(low);
        args.Add(high);
        args.Add(options.Amplitude);
        var kernel = backend.Kernel(Program, (inverse ? BackwardKernel : ForwardKernel)[x.DType]);
        kernel.Launch(checked((uint)rows), (uint)threads, 0, backend.Stream, args);
    }

    private static int RoundUp32(int n) => (n + 31) / 32 * 32;
}
