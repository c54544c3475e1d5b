using System.Text;
using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>A compiled program loaded into a context; hands out its kernels by name expression.</summary>
/// <remarks>Thread safety: safe to share; kernels are looked up under a lock. Stream rules: loading is synchronous; its kernels run on the streams their launches name (<see cref="CudaKernel"/>), and the module must not be disposed before they have finished.</remarks>
public sealed unsafe class CudaModule : IDisposable
{
    private readonly CudaContext _context;
    private readonly CompiledProgram _program;
    private readonly Dictionary<string, CudaKernel> _kernels = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private nint _handle;

    /// <summary>Loads <paramref name="program"/> (CUBIN, or PTX the driver JIT-compiles) into <paramref name="context"/>.</summary>
    public CudaModule(CudaContext context, CompiledProgram program)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(program);
        _context = context;
        _program = program;
        context.MakeCurrent();
        byte[] image = program.Image;
        if (program.IsPtx && (image.Length == 0 || image[^1] != 0))
        {
            image = [.. image, 0]; // the driver reads PTX as a C string
        }
        nint module;
        fixed (byte* p = image)
        {
            StatusCheck.Check(cuModuleLoadData(&module, p), nameof(cuModuleLoadData));
        }
        _handle = module;
    }

    /// <summary>The kernel for <paramref name="nameExpression"/> (e.g. <c>rope_forward&lt;float&gt;</c>).</summary>
    public CudaKernel GetKernel(string nameExpression)
    {
        ArgumentNullException.ThrowIfNull(nameExpression);
        ObjectDisposedException.ThrowIf(_handle == 0, this);
        lock (_gate)
        {
            if (_kernels.TryGetValue(nameExpression, out var kernel))
            {
                return kernel;
            }
            if (!_program.LoweredNames.TryGetValue(nameExpression, out var lowered))
            {
                throw new ArgumentException($"nameExpression: expected one of [{string.Join(", ", _program.LoweredNames.Keys)}], actual '{nameExpression}'", nameof(nameExpression));
            }
            _context.MakeCurrent();
            nint function;
            fixed (byte* name = Encoding.UTF8.GetBytes(lowered + "\0"))
            {
                StatusCheck.Check(cuModuleGetFunction(&function, _handle, name), nameof(cuModuleGetFunction));
            }
            kernel = new CudaKernel(_context, function, nameExpression);
            _kernels[nameExpression] = kernel;
            return kernel;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_handle != 0 && !_context.IsDisposed)
        {
            _context.MakeCurrent();
            _ = cuModuleUnload(_handle);
        }
        _handle = 0;
    }
}
