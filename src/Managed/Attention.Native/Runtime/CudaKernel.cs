using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>Grid or block dimensions.</summary>
/// <param name="X">Size along x.</param>
/// <param name="Y">Size along y.</param>
/// <param name="Z">Size along z.</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    /// <summary>A one-dimensional size.</summary>
    public static implicit operator Dim3(uint x) => new(x);

    /// <summary>A one-dimensional size.</summary>
    public static Dim3 FromUInt32(uint x) => new(x);

    /// <summary>Ceiling division, for grid sizes.</summary>
    public static uint CeilDiv(long n, long d) => checked((uint)((n + d - 1) / d));

    /// <summary>CUDA's limit on a grid's x dimension: 2^31 − 1 blocks.</summary>
    public const uint MaxGridX = int.MaxValue;

    /// <summary>CUDA's limit on a grid's y and z dimensions: 65,535 blocks.</summary>
    public const uint MaxGridYZ = ushort.MaxValue;

    /// <summary>
    /// A launch grid of <paramref name="x"/> × <paramref name="y"/> × <paramref name="z"/> blocks within CUDA's limits
    /// (<see cref="MaxGridX"/>; <see cref="MaxGridYZ"/> for y and z, which launchers fill with heads and batch), so a problem past
    /// them is refused with its argument named instead of failing in the driver. Zero is allowed (an empty launch is skipped).
    /// </summary>
    /// <param name="x">Blocks along x.</param>
    /// <param name="y">Blocks along y.</param>
    /// <param name="z">Blocks along z.</param>
    /// <param name="argument">The argument whose sizes set the grid, named by the exception.</param>
    /// <param name="xCounts">What x counts (e.g. "query tiles"), for the exception's message.</param>
    /// <param name="yCounts">What y counts (e.g. "heads").</param>
    /// <param name="zCounts">What z counts (e.g. "batch").</param>
    /// <exception cref="ArgumentException">A dimension is negative or past its limit.</exception>
    public static Dim3 Grid(long x, long y, long z, string argument, string xCounts, string yCounts, string zCounts)
    {
        CheckGridDimension(x, MaxGridX, argument, xCounts, "x");
        CheckGridDimension(y, MaxGridYZ, argument, yCounts, "y");
        CheckGridDimension(z, MaxGridYZ, argument, zCounts, "z");
        return new((uint)x, (uint)y, (uint)z);
    }

    private static void CheckGridDimension(long blocks, uint limit, string argument, string counts, string axis)
    {
        if (blocks < 0 || blocks > limit)
        {
            throw new ArgumentException($"{argument}: expected {counts} in [0, {limit}] (a CUDA grid's {axis} limit), actual {blocks}", argument);
        }
    }
}

/// <summary>A kernel function in a loaded module.</summary>
/// <remarks>Thread safety: launching from several threads is safe; their order on a shared stream is not defined. Stream rules: <see cref="Launch"/> queues the kernel on the stream it is given and returns before the kernel runs. The argument values are copied at the launch, so their storage may be reused at once; the device memory they point to must stay allocated, and unwritten by other streams, until the kernel has finished.</remarks>
public sealed unsafe class CudaKernel
{
    private readonly CudaContext _context;
    private readonly nint _function;

    internal CudaKernel(CudaContext context, nint function, string name)
    {
        _context = context;
        _function = function;
        Name = name;
    }

    /// <summary>The name expression the kernel was instantiated from.</summary>
    public string Name { get; }

    /// <summary>Allows launches with up to <paramref name="bytes"/> of dynamic shared memory (needed above 48 KiB).</summary>
    public void SetMaxDynamicSharedMemory(int bytes)
    {
        _context.MakeCurrent();
        StatusCheck.Check(cuFuncSetAttribute(_function, CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes), nameof(cuFuncSetAttribute));
    }

    /// <summary>Reads a function attribute (registers, static shared memory, ...).</summary>
    public int GetAttribute(CUfunction_attribute attribute)
    {
        _context.MakeCurrent();
        int value;
        StatusCheck.Check(cuFuncGetAttribute(&value, attribute, _function), nameof(cuFuncGetAttribute));
        return value;
    }

    /// <summary>Queues the kernel on <paramref name="stream"/> with the arguments gathered in <paramref name="args"/>.</summary>
    public void Launch(Dim3 grid, Dim3 block, uint sharedMemoryBytes, CudaStream stream, in KernelArgs args)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (grid.X == 0 || grid.Y == 0 || grid.Z == 0)
        {
            return; // nothing to do; the driver would reject an empty grid
        }
        // The launchers check their grids with their arguments named; this catches any that does not.
        _ = Dim3.Grid(grid.X, grid.Y, grid.Z, nameof(grid), "blocks along x", "blocks along y", "blocks along z");
        _context.MakeCurrent();
        void** pointers = stackalloc void*[Math.Max(1, args.Count)];
        fixed (byte* storage = args.Storage)
        {
            for (int i = 0; i < args.Count; i++)
            {
                pointers[i] = storage + args.Offset(i);
            }
            StatusCheck.Check(
                cuLaunchKernel(_function, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedMemoryBytes, stream.Handle, pointers, null),
                $"{nameof(cuLaunchKernel)}({Name})");
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>
/// Kernel arguments packed into caller-provided (typically <c>stackalloc</c>) storage, each at its natural
/// alignment, so a launch boxes nothing and allocates nothing:
/// <code>var args = new KernelArgs(stackalloc byte[128], stackalloc int[16]); args.Add(ptr); args.Add(n);</code>
/// </summary>
/// <remarks>Thread safety: a stack-only value; each thread packs its own.</remarks>
public ref struct KernelArgs
{
    private readonly Span<byte> _storage;
    private readonly Span<int> _offsets;
    private int _used;

    /// <summary>Packs into <paramref name="storage"/>, recording up to <paramref name="offsets"/>.Length arguments.</summary>
    public KernelArgs(Span<byte> storage, Span<int> offsets)
    {
        _storage = storage;
        _offsets = offsets;
        _used = 0;
        Count = 0;
    }

    /// <summary>Number of arguments added.</summary>
    public int Count { get; private set; }

    internal readonly ReadOnlySpan<byte> Storage => _storage;

    internal readonly int Offset(int index) => _offsets[index];

    /// <summary>Appends one argument (a device pointer, an int, a float, ...).</summary>
    public unsafe void Add<T>(T value)
        where T : unmanaged
    {
        int size = sizeof(T);
        int align = Math.Min(size, 8);
        int offset = (_used + align - 1) / align * align;
        if (offset + size > _storage.Length || Count >= _offsets.Length)
        {
            throw new InvalidOperationException($"KernelArgs: storage for {Count} arguments / {_storage.Length} bytes is full");
        }
        System.Runtime.InteropServices.MemoryMarshal.Write(_storage[offset..], in value);
        _offsets[Count++] = offset;
        _used = offset + size;
    }
}
