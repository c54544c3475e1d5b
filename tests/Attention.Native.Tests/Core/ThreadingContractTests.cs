using System.Reflection;
using System.Xml.Linq;

namespace Attention.Native.Tests.Core;

/// <summary>Issue 13 item 6: every public type of the library states its threading contract in its XML docs.</summary>
public class ThreadingContractTests
{
    [Test]
    public void Every_public_type_documents_its_thread_safety()
    {
        var assembly = typeof(Backend).Assembly;
        string xmlPath = Path.ChangeExtension(assembly.Location, ".xml");
        Assert.That(File.Exists(xmlPath), Is.True, $"the library's XML docs are next to it: {xmlPath}");
        var docs = XDocument.Load(xmlPath).Descendants("member")
            .ToDictionary(m => (string)m.Attribute("name")!, m => m.Value, StringComparer.Ordinal);
        var missing = assembly.GetExportedTypes()
            .Where(t => !t.IsEnum && !typeof(Exception).IsAssignableFrom(t) && !typeof(Delegate).IsAssignableFrom(t) && !t.IsNested)
            .Where(t => !docs.TryGetValue("T:" + t.FullName!.Split('`')[0] + (t.IsGenericType ? "`" + t.GetGenericArguments().Length : ""), out var text)
                || !text.Contains("Thread safety:", StringComparison.Ordinal))
            .Select(t => t.FullName)
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.That(missing, Is.Empty, "public types without a 'Thread safety:' statement in their docs");
    }
}
