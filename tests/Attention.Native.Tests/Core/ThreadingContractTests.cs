using System.Reflection;
using System.Xml.Linq;
using Attention.Native.Interop;
using Attention.Native.Ops;
using Attention.Native.Runtime;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Core;

/// <summary>
/// Issue 13 item 6: every public type of the libraries (Attention.Native and Attention.Native.TorchSharp) states its threading
/// contract in its XML docs; issue 17 item 5: and every one that reaches device memory or queues GPU work states its stream rules.
/// </summary>
public class ThreadingContractTests
{
    private static readonly Assembly[] Libraries = [typeof(Backend).Assembly, typeof(Attention.Native.Torch.AttentionModule).Assembly];

    // The CUDA runtime handles through which memory and work reach the device.
    private static readonly Type[] DeviceHandles =
        [typeof(CudaStream), typeof(DeviceBuffer<>), typeof(CUdeviceptr), typeof(CudaEvent), typeof(CudaBlas), typeof(CudaKernel), typeof(CudaModule), typeof(CudaContext)];

    [Test]
    public void Every_public_type_documents_its_thread_safety()
    {
        var missing = DocumentedTypes()
            .Where(t => !Docs(t).Contains("Thread safety:", StringComparison.Ordinal))
            .Select(t => t.FullName)
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.That(missing, Is.Empty, "public types without a 'Thread safety:' statement in their docs");
    }

    [Test]
    public void Every_public_type_that_reaches_device_memory_states_its_stream_rules()
    {
        var reaching = DocumentedTypes().Where(ReachesDevice).ToList();
        // The rule must select what it is meant for, or an empty selection would pass.
        Assert.That(reaching, Is.SupersetOf(new[] { typeof(CudaBackend), typeof(Tensor), typeof(Linear), typeof(AttentionLayer), typeof(KvCache), typeof(DeviceBuffer<>), typeof(Attention.Native.Torch.AttentionModule), typeof(Attention.Native.Torch.AttentionFunctions) }));
        Assert.That(reaching, Has.No.Member(typeof(Shape)).And.No.Member(typeof(LayerConfig)), "types that never hold a tensor need no stream rules");
        var missing = reaching
            .Where(t => !Docs(t).Contains("Stream rules:", StringComparison.Ordinal))
            .Select(t => t.FullName)
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.That(missing, Is.Empty, "public types that are, take, return or expose a tensor, a backend or a CUDA handle, without a 'Stream rules:' statement in their docs");
    }

    private static IEnumerable<Type> DocumentedTypes() => Libraries.SelectMany(a => a.GetExportedTypes())
        .Where(t => !t.IsEnum && !typeof(Exception).IsAssignableFrom(t) && !typeof(Delegate).IsAssignableFrom(t) && !t.IsNested);

    private static readonly Lazy<Dictionary<string, string>> XmlDocs = new(() =>
    {
        var docs = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var library in Libraries)
        {
            string xmlPath = Path.ChangeExtension(library.Location, ".xml");
            Assert.That(File.Exists(xmlPath), Is.True, $"the library's XML docs are next to it: {xmlPath}");
            foreach (var m in XDocument.Load(xmlPath).Descendants("member"))
            {
                docs[(string)m.Attribute("name")!] = m.Value;
            }
        }
        return docs;
    });

    private static string Docs(Type t) =>
        XmlDocs.Value.TryGetValue("T:" + t.FullName!.Split('`')[0] + (t.IsGenericType ? "`" + t.GetGenericArguments().Length : ""), out var text) ? text : "";

    // A type reaches the device when it is, takes, returns or exposes (inherited members included) a tensor, a backend or a
    // CUDA handle: on the CUDA backend such a call queues work on a stream or touches device memory.
    private static bool ReachesDevice(Type type)
    {
        const BindingFlags Public = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static;
        var members = type.GetMethods(Public).Where(m => m.DeclaringType != typeof(object))
            .SelectMany(m => m.GetParameters().Select(p => p.ParameterType).Append(m.ReturnType))
            .Concat(type.GetConstructors().SelectMany(c => c.GetParameters().Select(p => p.ParameterType)))
            .Concat(type.GetProperties(Public).Select(p => p.PropertyType))
            .Concat(type.GetFields(Public).Select(f => f.FieldType));
        return IsDeviceType(type) || members.Any(IsDeviceType);
    }

    private static bool IsDeviceType(Type type)
    {
        if (type.HasElementType)
        {
            return IsDeviceType(type.GetElementType()!);
        }
        if (type.IsGenericType)
        {
            if (type.GetGenericArguments().Any(IsDeviceType))
            {
                return true;
            }
            type = type.GetGenericTypeDefinition();
        }
        return typeof(Tensor).IsAssignableFrom(type) || typeof(Backend).IsAssignableFrom(type) || DeviceHandles.Contains(type);
    }
}
