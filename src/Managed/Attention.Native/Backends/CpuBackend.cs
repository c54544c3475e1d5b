using System.Numerics.Tensors;
using Attention.Native.Ops;

namespace Attention.Native;

/// <summary>
/// The managed CPU backend: the reference implementation of every op, and the default wherever no GPU
/// is usable. Computes F32 in float and F64 in double; BF16/F16 tensors are widened to F32, computed,
/// and rounded back (round-to-nearest-even), as the GPU's fp32-accumulating kernels do.
/// </summary>
/// <remarks>Thread safety: stateless between calls; any number of threads may run ops and layers on it at once (tensors written by one call must not be touched by another meanwhile). Stream rules: none; an op or layer call has finished when it returns.</remarks>
public sealed partial class CpuBackend : Backend
{
    internal CpuBackend()
    {
    }

    /// <inheritdoc/>
    public override BackendKind Kind => BackendKind.Cpu;

    /// <inheritdoc/>
    public override string Name => "cpu";

    /// <inheritdoc/>
    public override bool Supports(DType dtype) => dtype is DType.F32 or DType.F64 or DType.BF16 or DType.F16;

    /// <inheritdoc/>
    public override void Synchronize()
    {
    }

    private protected override Tensor Allocate(Shape shape, DType dtype, bool zero) => new HostTensor(this, shape, dtype);

    /// <summary>
    /// A tensor of <paramref name="shape"/> over the caller's <paramref name="memory"/> (row-major, exactly the shape's element
    /// count), without a copy: ops read the caller's values where they lie and writes into the tensor land in
    /// <paramref name="memory"/>. The memory is pinned until the tensor is disposed. <typeparamref name="T"/> gives the dtype:
    /// float (F32), double (F64), <see cref="Half"/> (F16) or <see cref="BFloat16"/> (BF16).
    /// </summary>
    /// <remarks>
    /// Writes the caller makes through its own memory are seen by the next op, but are not counted as writes to the tensor, so a
    /// training pass cannot tell that a parameter changed that way between its forward and its backward: change wrapped
    /// parameters through the tensor (<see cref="Tensor.CopyFrom(ReadOnlySpan{float})"/>, <see cref="HostTensor.AsSpan{T}"/>)
    /// or outside a pass.
    /// </remarks>
    public unsafe HostTensor Wrap<T>(Memory<T> memory, Shape shape)
        where T : unmanaged
    {
        var dtype = DTypeOf<T>(nameof(T));
        var pin = memory.Pin();
        return HostTensor.External(this, shape, dtype, pin.Pointer, (long)memory.Length * sizeof(T), pin, keepAlive: null, nameof(memory));
    }

    /// <summary>
    /// A tensor over the elements of a System.Numerics.Tensors <paramref name="tensor"/> (dense and row-major, as
    /// <see cref="System.Numerics.Tensors.Tensor{T}"/> lays them out when it is not a strided view), without a copy: the same memory, pinned until this
    /// tensor is disposed, of the same shape. <typeparamref name="T"/> as for <see cref="Wrap{T}(Memory{T}, Shape)"/>.
    /// </summary>
    public unsafe HostTensor Wrap<T>(System.Numerics.Tensors.Tensor<T> tensor)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var dtype = DTypeOf<T>(nameof(T));
        var shape = DenseShape(tensor.Lengths, tensor.IsDense, nameof(tensor));
        var pin = tensor.GetPinnedHandle();
        return HostTensor.External(this, shape, dtype, pin.Pointer, checked((long)tensor.FlattenedLength * sizeof(T)), pin, keepAlive: tensor, nameof(tensor));
    }

    /// <summary>
    /// Runs <paramref name="use"/> with a tensor over the elements of <paramref name="span"/> (dense and row-major; a
    /// <see cref="TensorSpan{T}"/> is stack-only, so the tensor lives for the call only): no copy, ops inside read and write
    /// the span's memory. The tensor is disposed when <paramref name="use"/> returns; what it returns (e.g. an op's new output)
    /// is the caller's. <typeparamref name="T"/> as for <see cref="Wrap{T}(Memory{T}, Shape)"/>.
    /// </summary>
    public unsafe TResult Wrap<T, TResult>(TensorSpan<T> span, Func<HostTensor, TResult> use)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(use);
        var dtype = DTypeOf<T>(nameof(T));
        var shape = DenseShape(span.Lengths, span.IsDense, nameof(span));
        fixed (T* pointer = &span.GetPinnableReference())
        {
            using var tensor = HostTensor.External(this, shape, dtype, pointer, checked((long)span.FlattenedLength * sizeof(T)), default, null, nameof(span));
            return use(tensor);
        }
    }

    /// <summary>
    /// A tensor of <paramref name="shape"/> and <paramref name="dtype"/> over native memory at <paramref name="pointer"/> (row-major,
    /// aligned to the element size), without a copy. The caller keeps the memory valid until the tensor is disposed;
    /// <paramref name="owner"/>, when given, is referenced by the tensor until then (so the object owning the memory, such as a
    /// TorchSharp tensor or a SafeHandle, is not collected meanwhile). Disposing the tensor frees nothing.
    /// </summary>
    public HostTensor Wrap(nint pointer, Shape shape, DType dtype, object? owner = null) => Wrap(pointer, shape, Tensor.ContiguousStrides(shape), dtype, owner);

    /// <summary>
    /// A strided view of <paramref name="shape"/> over native memory at <paramref name="pointer"/>, without a copy: element
    /// <c>(i₀, i₁, …)</c> lies <c>Σ iₐ·strides[a]</c> elements after <paramref name="pointer"/> (the layout of a PyTorch or
    /// TorchSharp tensor, whose <c>stride()</c> this takes as it is; e.g. q of a fused <c>[B, T, 3, H, d]</c> projection seen as
    /// <c>[B, T, H, d]</c> with strides <c>[T·3·H·d, 3·H·d, d, 1]</c>). Strides are non-negative and the last axis contiguous
    /// (stride 1). <see cref="Ops.SoftmaxAttention"/> takes such views as they are; other ops take contiguous tensors only
    /// (copy a view with <c>CopyTo</c> where one is needed). Ownership as <see cref="Wrap(nint, Shape, DType, object?)"/>.
    /// </summary>
    public unsafe HostTensor Wrap(nint pointer, Shape shape, IReadOnlyList<long> strides, DType dtype, object? owner = null)
    {
        if (!Supports(dtype))
        {
            throw new ArgumentException($"dtype: expected a dtype the {Kind} backend supports, actual {dtype}", nameof(dtype));
        }
        var checkedStrides = Tensor.CheckStrides(shape, strides, nameof(strides));
        long bytes = checkedStrides is null ? shape.BytesOf(dtype, nameof(shape)) : checked(Tensor.Extent(shape, checkedStrides) * dtype.SizeInBytes());
        return HostTensor.External(this, shape, dtype, (void*)pointer, bytes, default, owner, nameof(pointer), checkedStrides);
    }

    // The shape of a System.Numerics.Tensors tensor or span of these lengths; it must be dense (row-major, no gaps).
    private static Shape DenseShape(ReadOnlySpan<nint> lengths, bool dense, string name)
    {
        if (!dense)
        {
            throw new ArgumentException($"{name}: expected a dense tensor (row-major, no gaps), actual a strided one", name);
        }
        var dims = new int[lengths.Length];
        for (int i = 0; i < dims.Length; i++)
        {
            dims[i] = checked((int)lengths[i]);
        }
        return new Shape(dims);
    }

    // The dtype of the element type T (F32, F64, F16, BF16).
    private static DType DTypeOf<T>(string name)
        where T : unmanaged =>
        typeof(T) == typeof(float) ? DType.F32
        : typeof(T) == typeof(double) ? DType.F64
        : typeof(T) == typeof(Half) ? DType.F16
        : typeof(T) == typeof(BFloat16) ? DType.BF16
        : throw new ArgumentException($"{name}: expected float, double, Half or BFloat16, actual {typeof(T).Name}", name);

    internal override void LinearForward(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            LinearForward(w.In(x), w.In(weight), w.InOptional(bias), w.Out(y, keepContents: false));
            return;
        }
        int k = x.Shape[-1], n = weight.Shape[0], m = (int)x.Shape.Rows;
        if (x.DType == DType.F64)
        {
            LinearCpu.Forward(P<double>(x), P<double>(weight), P<double>(bias), P<double>(y), m, n, k);
        }
        else
        {
            LinearCpu.Forward(P<float>(x), P<float>(weight), P<float>(bias), P<float>(y), m, n, k);
        }
    }

    internal override void LinearBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias, bool accumulate)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            LinearBackward(w.In(x), w.In(weight), w.In(dy), w.OutOptional(dx, accumulate), w.OutOptional(dweight, accumulate), w.OutOptional(dbias, accumulate), accumulate);
            return;
        }
        int k = x.Shape[-1], n = weight.Shape[0], m = (int)x.Shape.Rows;
        if (x.DType == DType.F64)
        {
            LinearCpu.Backward(P<double>(x), P<double>(weight), P<double>(dy), P<double>(dx), P<double>(dweight), P<double>(dbias), m, n, k, accumulate);
        }
        else
        {
            LinearCpu.Backward(P<float>(x), P<float>(weight), P<float>(dy), P<float>(dx), P<float>(dweight), P<float>(dbias), m, n, k, accumulate);
        }
    }

    internal override void RopeForward(Tensor x, Tensor y, RopeOptions options, TokenPositions positions) =>
        RopeApply(x, y, options, positions, inverse: false);

    internal override void RopeBackward(Tensor dy, Tensor dx, RopeOptions options, TokenPositions positions) =>
        RopeApply(dy, dx, options, positions, inverse: true);

    private void RopeApply(Tensor x, Tensor y, RopeOptions options, TokenPositions positions, bool inverse)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            var xf = w.In(x);
            RopeApply(xf, w.Out(y, keepContents: true), options, positions, inverse);
            return;
        }
        var s = x.Shape;
        int heads = s.Rank == 4 ? s[2] : 1;
        if (x.DType == DType.F64)
        {
            RopeCpu.Apply(P<double>(x), P<double>(y), s[0], s[1], heads, s[-1], options, positions, inverse);
        }
        else
        {
            RopeCpu.Apply(P<float>(x), P<float>(y), s[0], s[1], heads, s[-1], options, positions, inverse);
        }
    }

    internal override void RmsNormForward(Tensor x, Tensor? gain, Tensor y, float epsilon)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            RmsNormForward(w.In(x), w.InOptional(gain), w.Out(y, keepContents: false), epsilon);
            return;
        }
        if (x.DType == DType.F64)
        {
            RmsNormCpu.Forward(P<double>(x), P<double>(gain), P<double>(y), x.Shape.Rows, x.Shape[-1], (double)epsilon);
        }
        else
        {
            RmsNormCpu.Forward(P<float>(x), P<float>(gain), P<float>(y), x.Shape.Rows, x.Shape[-1], epsilon);
        }
    }

    internal override void RmsNormBackward(Tensor x, Tensor? gain, Tensor dy, Tensor dx, Tensor? dgain, float epsilon, bool accumulate)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            RmsNormBackward(w.In(x), w.InOptional(gain), w.In(dy), w.Out(dx, accumulate), w.OutOptional(dgain, accumulate), epsilon, accumulate);
            return;
        }
        if (x.DType == DType.F64)
        {
            RmsNormCpu.Backward(P<double>(x), P<double>(gain), P<double>(dy), P<double>(dx), P<double>(dgain), x.Shape.Rows, x.Shape[-1], (double)epsilon, accumulate);
        }
        else
        {
            RmsNormCpu.Backward(P<float>(x), P<float>(gain), P<float>(dy), P<float>(dx), P<float>(dgain), x.Shape.Rows, x.Shape[-1], epsilon, accumulate);
        }
    }

    // The pinned view of a host tensor; an absent optional tensor is an empty view.
    /// <summary>Rows [<paramref name="first"/>, +<paramref name="count"/>) of the token axis of a packed [1, N, …] tensor, as a view [1, count, …].</summary>
    internal static Tensor TokenRows(Tensor t, int first, int count)
    {
        var dims = new int[t.Shape.Rank];
        dims[0] = 1;
        dims[1] = count;
        long row = 1;
        for (int i = 2; i < dims.Length; i++)
        {
            dims[i] = t.Shape[i];
            row *= dims[i];
        }
        return ((HostTensor)t).View(first * row, new Shape(dims));
    }

    /// <summary>Row <paramref name="row"/> of the leading axis of <paramref name="t"/>, as a view with a leading axis of 1.</summary>
    internal static Tensor LeadingRow(Tensor t, int row)
    {
        var dims = new int[t.Shape.Rank];
        dims[0] = 1;
        for (int i = 1; i < dims.Length; i++)
        {
            dims[i] = t.Shape[i];
        }
        var shape = new Shape(dims);
        return ((HostTensor)t).View(row * shape.ElementCount, shape);
    }

    private static PinnedBuffer<T> P<T>(Tensor? tensor)
        where T : unmanaged => tensor is null ? default : ((HostTensor)tensor).Pinned<T>();

    /// <summary>F32 working copies of 16-bit tensors; outputs are rounded back on dispose.</summary>
    private sealed class Widening(CpuBackend backend) : IDisposable
    {
        private readonly List<Tensor> _temporaries = [];
        private readonly List<(Tensor Wide, Tensor Target)> _outputs = [];

        public Tensor In(Tensor tensor) => Widen(tensor, copy: true);

        public Tensor? InOptional(Tensor? tensor) => tensor is null ? null : In(tensor);

        public Tensor Out(Tensor tensor, bool keepContents)
        {
            var wide = Widen(tensor, copy: keepContents);
            _outputs.Add((wide, tensor));
            return wide;
        }

        public Tensor? OutOptional(Tensor? tensor, bool keepContents) => tensor is null ? null : Out(tensor, keepContents);

        private Tensor Widen(Tensor tensor, bool copy)
        {
            var wide = backend.Zeros(tensor.Shape, DType.F32);
            _temporaries.Add(wide);
            if (copy)
            {
                tensor.CopyTo(((HostTensor)wide).AsSpan<float>());
            }
            return wide;
        }

        public void Dispose()
        {
            foreach (var (wide, target) in _outputs)
            {
                target.CopyFrom(((HostTensor)wide).AsSpan<float>());
            }
            foreach (var t in _temporaries)
            {
                t.Dispose();
            }
        }
    }
}
