using System.Reflection;
using Attention.Native.Interop;
using TorchSharp;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Attention.Native.Torch;

/// <summary>
/// Attention.Native tensors over TorchSharp tensors' own memory (no copies): the address, the dtype, the backend, and
/// views in the layouts the ops take.
/// </summary>
internal static class TorchMemory
{
    // TorchSharp 0.107 has no public "data pointer of a tensor" (Storage<T> converts to T and copies). Its own binding of
    // THSStorage_data_ptr, called through the native library TorchSharp loaded, gives the storage's address; the tensor's
    // first element lies storage_offset elements after it.
    private static readonly Func<IntPtr, IntPtr> StorageAddress = FindStorageAddress();

    private static Func<IntPtr, IntPtr> FindStorageAddress()
    {
        var method = typeof(torch).Assembly.GetType("TorchSharp.PInvoke.NativeMethods")?
            .GetMethod("THSStorage_data_ptr", BindingFlags.Static | BindingFlags.NonPublic | BindingFlags.Public, [typeof(IntPtr)]);
        if (method is null || method.ReturnType != typeof(IntPtr))
        {
            return _ => throw new NotSupportedException(
                $"TorchSharp {typeof(torch).Assembly.GetName().Version}: its binding THSStorage_data_ptr(IntPtr) was not found; Attention.Native.TorchSharp reads tensors' memory through it (built against TorchSharp 0.107.0)");
        }
        return method.CreateDelegate<Func<IntPtr, IntPtr>>();
    }

    /// <summary>The address of <paramref name="t"/>'s first element (host or device memory).</summary>
    public static IntPtr Address(TorchTensor t)
    {
        var storage = StorageAddress(t.Handle);
        return storage + checked((nint)(t.storage_offset() * t.element_size()));
    }

    /// <summary>The Attention.Native dtype of a torch dtype, or an exception naming <paramref name="name"/>.</summary>
    public static DType DTypeOf(TorchTensor t, string name) => t.dtype switch
    {
        torch.ScalarType.Float32 => DType.F32,
        torch.ScalarType.Float64 => DType.F64,
        torch.ScalarType.BFloat16 => DType.BF16,
        torch.ScalarType.Float16 => DType.F16,
        _ => throw new ArgumentException($"{name}: expected float32, float64, bfloat16 or float16, actual {t.dtype}", name),
    };

    /// <summary>The torch dtype of an Attention.Native dtype.</summary>
    public static torch.ScalarType ScalarTypeOf(DType dtype) => dtype switch
    {
        DType.F32 => torch.ScalarType.Float32,
        DType.F64 => torch.ScalarType.Float64,
        DType.BF16 => torch.ScalarType.BFloat16,
        DType.F16 => torch.ScalarType.Float16,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, $"dtype: expected F32, F64, BF16 or F16, actual {dtype}"),
    };

    /// <summary>
    /// The backend that computes on <paramref name="t"/>'s device: the CPU backend for CPU tensors; for CUDA tensors
    /// <paramref name="backend"/>, which must be a <see cref="CudaBackend"/> of that device.
    /// </summary>
    public static Backend BackendFor(TorchTensor t, Backend? backend, string name)
    {
        switch (t.device_type)
        {
            case DeviceType.CPU:
                if (backend is not null && backend.Kind != BackendKind.Cpu)
                {
                    throw new ArgumentException($"backend: expected the CPU backend (or null) for {name} on the CPU, actual {backend.Name}", nameof(backend));
                }
                return Backend.Cpu;
            case DeviceType.CUDA:
                if (backend is not CudaBackend cuda)
                {
                    throw new ArgumentException($"backend: expected a CudaBackend of cuda:{t.device_index} for {name} on cuda:{t.device_index} (CudaBackend.Create(ordinal, stream) on the stream torch uses), actual {backend?.Name ?? "null"}", nameof(backend));
                }
                if (cuda.Device.Ordinal != t.device_index)
                {
                    throw new ArgumentException($"backend: expected a CudaBackend of cuda:{t.device_index} for {name}, actual one of cuda:{cuda.Device.Ordinal}", nameof(backend));
                }
                return cuda;
            default:
                throw new ArgumentException($"{name}: expected a CPU or CUDA tensor, actual one on {t.device_type}", name);
        }
    }

    /// <summary>
    /// <paramref name="t"/> (contiguous) as an Attention.Native tensor of its shape over its memory; the view keeps
    /// <paramref name="t"/> referenced until disposed. Non-contiguous tensors are refused: callers choose where a copy is acceptable.
    /// </summary>
    public static Native.Tensor View(TorchTensor t, Backend backend, string name) => View(t, backend, ShapeOf(t, name), offsetElements: 0, name);

    /// <summary>Elements [offset, offset + shape's count) of contiguous <paramref name="t"/>, viewed as <paramref name="shape"/>.</summary>
    public static Native.Tensor View(TorchTensor t, Backend backend, Shape shape, long offsetElements, string name)
    {
        if (!t.is_contiguous())
        {
            throw new ArgumentException($"{name}: expected a contiguous tensor, actual strides [{string.Join(", ", t.stride())}] for shape [{string.Join(", ", t.shape)}]", name);
        }
        var dtype = DTypeOf(t, name);
        if (offsetElements < 0 || offsetElements + shape.ElementCount > t.numel())
        {
            throw new ArgumentOutOfRangeException(nameof(offsetElements), $"{name}: expected elements [{offsetElements}, {offsetElements + shape.ElementCount}) inside its {t.numel()}");
        }
        var address = Address(t) + checked((nint)(offsetElements * dtype.SizeInBytes()));
        return backend switch
        {
            CpuBackend cpu => cpu.Wrap(address, shape, dtype, owner: t),
            CudaBackend cuda => cuda.Wrap(new CUdeviceptr((ulong)address), shape, dtype),
            _ => throw new ArgumentException($"backend: expected the CPU or a CUDA backend, actual {backend.Name}", nameof(backend)),
        };
    }

    /// <summary>
    /// A head-major <paramref name="t"/> <c>[B, H, T, d]</c> (torch's attention layout) as the token-major <c>[B, T, H, d]</c> the
    /// op takes, without a copy whenever its last axis is contiguous: its own strides, swapped, make the view (contiguous
    /// <c>[B, H, T, d]</c> memory, a transposed <c>[B, T, H, d]</c> tensor, or a slice of a fused projection alike). A
    /// layout whose last axis is strided is copied once; the copy is returned in <paramref name="copy"/> so that the caller
    /// keeps it alive.
    /// </summary>
    public static Native.Tensor TokenMajor(TorchTensor t, Backend backend, string name, out TorchTensor? copy)
    {
        copy = null;
        if (t.dim() != 4)
        {
            throw new ArgumentException($"{name}: expected rank 4 [B, H, T, d], actual shape [{string.Join(", ", t.shape)}]", name);
        }
        if (!(t.stride(3) == 1 || t.shape[3] <= 1) || t.stride().Any(s => s < 0))
        {
            copy = t.contiguous();
            t = copy;
        }
        return Strided(t.transpose(1, 2), backend, name, owner: t);
    }

    /// <summary>
    /// <paramref name="t"/> as a view with its own strides (its last axis contiguous) over its memory, no copy; the view keeps
    /// <paramref name="owner"/> (default: <paramref name="t"/>) referenced until disposed.
    /// </summary>
    public static Native.Tensor Strided(TorchTensor t, Backend backend, string name, TorchTensor? owner = null)
    {
        var dtype = DTypeOf(t, name);
        var shape = ShapeOf(t, name);
        var strides = t.stride();
        var address = Address(t);
        return backend switch
        {
            CpuBackend cpu => cpu.Wrap(address, shape, strides, dtype, owner: owner ?? t),
            CudaBackend cuda => cuda.Wrap(new CUdeviceptr((ulong)address), shape, strides, dtype),
            _ => throw new ArgumentException($"backend: expected the CPU or a CUDA backend, actual {backend.Name}", nameof(backend)),
        };
    }

    /// <summary>The Attention.Native shape of <paramref name="t"/> (every size an int).</summary>
    public static Shape ShapeOf(TorchTensor t, string name)
    {
        var dims = new int[t.dim()];
        for (int i = 0; i < dims.Length; i++)
        {
            long size = t.shape[i];
            if (size > int.MaxValue)
            {
                throw new ArgumentException($"{name}: expected sizes below 2^31, actual {size} on axis {i}", name);
            }
            dims[i] = (int)size;
        }
        return new Shape(dims);
    }

    /// <summary>Copies <paramref name="source"/> into contiguous <paramref name="destination"/> of the same shape and dtype, on the source's backend.</summary>
    public static void CopyInto(Native.Tensor source, TorchTensor destination, string name) => CopyInto(source, destination, 0, name);

    /// <summary>Copies <paramref name="source"/> into elements [offset, offset + its count) of contiguous <paramref name="destination"/>.</summary>
    public static void CopyInto(Native.Tensor source, TorchTensor destination, long offsetElements, string name)
    {
        if (source.Shape.ElementCount == 0)
        {
            return;
        }
        using var target = View(destination, source.Backend, source.Shape, offsetElements, name);
        Ops.Columns.Copy(source, 0, target, 0, source.Shape[-1]);
    }
}
