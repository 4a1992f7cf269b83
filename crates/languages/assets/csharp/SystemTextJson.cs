// CodeBeaker's stand-in for System.Text.Json on Mono, which does not ship it.
//
// It implements the subset that snippets written against .NET's System.Text.Json use: parsing into
// JsonDocument/JsonElement (GetProperty, TryGetProperty, Get*/TryGet* for numbers, GetString,
// GetBoolean, EnumerateArray, EnumerateObject, GetArrayLength, ValueKind, GetRawText, ToString,
// indexers, Clone) and JsonSerializer.Serialize for null, booleans, numbers, strings, enums, dates,
// GUIDs, JsonElement/JsonDocument, dictionaries, sequences, anonymous types and plain objects
// (public readable properties), with JsonSerializerOptions.WriteIndented and
// PropertyNamingPolicy = JsonNamingPolicy.CamelCase. JsonSerializer.Deserialize<T> supports
// JsonElement, JsonDocument, object, string, bool, numeric types, and List/Dictionary of those.
// Output escapes like .NET's default encoder: control characters, quotes, backslashes, HTML-sensitive
// characters and everything outside ASCII become \uXXXX.

using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Reflection;
using System.Text;

namespace System.Text.Json
{
    /// <summary>The kind of a JSON value.</summary>
    public enum JsonValueKind : byte
    {
        Undefined = 0,
        Object = 1,
        Array = 2,
        String = 3,
        Number = 4,
        True = 5,
        False = 6,
        Null = 7,
    }

    /// <summary>Thrown for malformed JSON and unsupported conversions.</summary>
    public class JsonException : Exception
    {
        public JsonException() : base("The JSON value could not be converted.") { }
        public JsonException(string message) : base(message) { }
        public JsonException(string message, Exception inner) : base(message, inner) { }
    }

    internal sealed class JsonNode
    {
        public JsonValueKind Kind;
        public string Text;                                   // string value or raw number text
        public List<JsonNode> Items;                          // array items
        public List<KeyValuePair<string, JsonNode>> Members;  // object members in document order
        public string Raw;                                    // the value's original text
    }

    /// <summary>A parsed JSON document.</summary>
    public sealed class JsonDocument : IDisposable
    {
        private readonly JsonElement root;

        private JsonDocument(JsonElement root) { this.root = root; }

        public JsonElement RootElement { get { return root; } }

        public static JsonDocument Parse(string json)
        {
            return new JsonDocument(new JsonElement(JsonParser.Parse(json)));
        }

        public static JsonDocument Parse(string json, JsonDocumentOptions options)
        {
            return Parse(json);
        }

        public void Dispose() { }
    }

    /// <summary>Accepted for source compatibility; the options are ignored.</summary>
    public struct JsonDocumentOptions
    {
        public bool AllowTrailingCommas { get; set; }
        public int MaxDepth { get; set; }
    }

    /// <summary>A JSON value: an immutable view into a parsed document.</summary>
    public struct JsonElement
    {
        private readonly JsonNode node;

        internal JsonElement(JsonNode node) { this.node = node; }

        internal JsonNode Node { get { return node; } }

        public JsonValueKind ValueKind { get { return node == null ? JsonValueKind.Undefined : node.Kind; } }

        public JsonElement this[int index]
        {
            get
            {
                Require(JsonValueKind.Array);
                if (index < 0 || index >= node.Items.Count)
                    throw new IndexOutOfRangeException("Index was outside the bounds of the array.");
                return new JsonElement(node.Items[index]);
            }
        }

        public JsonElement GetProperty(string propertyName)
        {
            JsonElement value;
            if (propertyName == null) throw new ArgumentNullException("propertyName");
            if (TryGetProperty(propertyName, out value)) return value;
            throw new KeyNotFoundException("The given key '" + propertyName + "' was not present in the dictionary.");
        }

        public bool TryGetProperty(string propertyName, out JsonElement value)
        {
            Require(JsonValueKind.Object);
            // Like System.Text.Json: the last occurrence of a duplicated name wins.
            for (int i = node.Members.Count - 1; i >= 0; i--)
            {
                if (node.Members[i].Key == propertyName)
                {
                    value = new JsonElement(node.Members[i].Value);
                    return true;
                }
            }
            value = default(JsonElement);
            return false;
        }

        public int GetArrayLength()
        {
            Require(JsonValueKind.Array);
            return node.Items.Count;
        }

        public int GetPropertyCount()
        {
            Require(JsonValueKind.Object);
            return node.Members.Count;
        }

        public string GetString()
        {
            if (ValueKind == JsonValueKind.Null) return null;
            Require(JsonValueKind.String);
            return node.Text;
        }

        public bool GetBoolean()
        {
            if (ValueKind == JsonValueKind.True) return true;
            if (ValueKind == JsonValueKind.False) return false;
            throw WrongKind("Boolean");
        }

        public int GetInt32() { int v; if (TryGetInt32(out v)) return v; throw NotA("Int32"); }
        public long GetInt64() { long v; if (TryGetInt64(out v)) return v; throw NotA("Int64"); }
        public uint GetUInt32() { uint v; if (TryGetUInt32(out v)) return v; throw NotA("UInt32"); }
        public ulong GetUInt64() { ulong v; if (TryGetUInt64(out v)) return v; throw NotA("UInt64"); }
        public short GetInt16() { short v; if (TryGetInt16(out v)) return v; throw NotA("Int16"); }
        public byte GetByte() { byte v; if (TryGetByte(out v)) return v; throw NotA("Byte"); }
        public double GetDouble() { double v; if (TryGetDouble(out v)) return v; throw NotA("Double"); }
        public float GetSingle() { float v; if (TryGetSingle(out v)) return v; throw NotA("Single"); }
        public decimal GetDecimal() { decimal v; if (TryGetDecimal(out v)) return v; throw NotA("Decimal"); }

        public bool TryGetInt32(out int value) { return int.TryParse(NumberText(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value); }
        public bool TryGetInt64(out long value) { return long.TryParse(NumberText(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value); }
        public bool TryGetUInt32(out uint value) { return uint.TryParse(NumberText(), NumberStyles.None, CultureInfo.InvariantCulture, out value); }
        public bool TryGetUInt64(out ulong value) { return ulong.TryParse(NumberText(), NumberStyles.None, CultureInfo.InvariantCulture, out value); }
        public bool TryGetInt16(out short value) { return short.TryParse(NumberText(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value); }
        public bool TryGetByte(out byte value) { return byte.TryParse(NumberText(), NumberStyles.None, CultureInfo.InvariantCulture, out value); }

        public bool TryGetDouble(out double value)
        {
            return double.TryParse(NumberText(), NumberStyles.Float, CultureInfo.InvariantCulture, out value)
                && !double.IsInfinity(value);
        }

        public bool TryGetSingle(out float value)
        {
            return float.TryParse(NumberText(), NumberStyles.Float, CultureInfo.InvariantCulture, out value)
                && !float.IsInfinity(value);
        }

        public bool TryGetDecimal(out decimal value)
        {
            return decimal.TryParse(NumberText(), NumberStyles.Float, CultureInfo.InvariantCulture, out value);
        }

        public ArrayEnumerator EnumerateArray()
        {
            Require(JsonValueKind.Array);
            return new ArrayEnumerator(node.Items);
        }

        public ObjectEnumerator EnumerateObject()
        {
            Require(JsonValueKind.Object);
            return new ObjectEnumerator(node.Members);
        }

        public string GetRawText()
        {
            if (node == null) throw new InvalidOperationException("Operation is not valid due to the current state of the object.");
            return node.Raw;
        }

        public JsonElement Clone() { return this; }

        public override string ToString()
        {
            switch (ValueKind)
            {
                case JsonValueKind.Undefined:
                case JsonValueKind.Null:
                    return string.Empty;
                case JsonValueKind.True:
                    return bool.TrueString;
                case JsonValueKind.False:
                    return bool.FalseString;
                case JsonValueKind.String:
                    return node.Text;
                default:
                    return node.Raw;
            }
        }

        private string NumberText()
        {
            Require(JsonValueKind.Number);
            return node.Text;
        }

        private void Require(JsonValueKind kind)
        {
            if (ValueKind != kind) throw WrongKind(kind.ToString());
        }

        private InvalidOperationException WrongKind(string expected)
        {
            return new InvalidOperationException(
                "The requested operation requires an element of type '" + expected + "', but the target element has type '" + ValueKind + "'.");
        }

        private static FormatException NotA(string type)
        {
            return new FormatException("The JSON value is not in a supported " + type + " format.");
        }

        /// <summary>Enumerates the items of a JSON array.</summary>
        public struct ArrayEnumerator : IEnumerable<JsonElement>, IEnumerator<JsonElement>
        {
            private readonly List<JsonNode> items;
            private int index;

            internal ArrayEnumerator(List<JsonNode> items) { this.items = items; index = -1; }

            public JsonElement Current { get { return new JsonElement(items[index]); } }
            object IEnumerator.Current { get { return Current; } }
            public bool MoveNext() { index++; return index < items.Count; }
            public void Reset() { index = -1; }
            public void Dispose() { }
            public ArrayEnumerator GetEnumerator() { return new ArrayEnumerator(items); }
            IEnumerator<JsonElement> IEnumerable<JsonElement>.GetEnumerator() { return GetEnumerator(); }
            IEnumerator IEnumerable.GetEnumerator() { return GetEnumerator(); }
        }

        /// <summary>Enumerates the properties of a JSON object in document order.</summary>
        public struct ObjectEnumerator : IEnumerable<JsonProperty>, IEnumerator<JsonProperty>
        {
            private readonly List<KeyValuePair<string, JsonNode>> members;
            private int index;

            internal ObjectEnumerator(List<KeyValuePair<string, JsonNode>> members) { this.members = members; index = -1; }

            public JsonProperty Current { get { return new JsonProperty(members[index].Key, new JsonElement(members[index].Value)); } }
            object IEnumerator.Current { get { return Current; } }
            public bool MoveNext() { index++; return index < members.Count; }
            public void Reset() { index = -1; }
            public void Dispose() { }
            public ObjectEnumerator GetEnumerator() { return new ObjectEnumerator(members); }
            IEnumerator<JsonProperty> IEnumerable<JsonProperty>.GetEnumerator() { return GetEnumerator(); }
            IEnumerator IEnumerable.GetEnumerator() { return GetEnumerator(); }
        }
    }

    /// <summary>A property of a JSON object.</summary>
    public struct JsonProperty
    {
        private readonly string name;
        private readonly JsonElement value;

        internal JsonProperty(string name, JsonElement value) { this.name = name; this.value = value; }

        public string Name { get { return name; } }
        public JsonElement Value { get { return value; } }
        public bool NameEquals(string text) { return name == text; }
        public override string ToString() { return JsonWriter.Quote(name) + ":" + value.GetRawText(); }
    }

    /// <summary>Naming policies for serialized property names.</summary>
    public abstract class JsonNamingPolicy
    {
        public static JsonNamingPolicy CamelCase { get { return new CamelCasePolicy(); } }

        public abstract string ConvertName(string name);

        private sealed class CamelCasePolicy : JsonNamingPolicy
        {
            public override string ConvertName(string name)
            {
                if (string.IsNullOrEmpty(name) || !char.IsUpper(name[0])) return name;
                char[] chars = name.ToCharArray();
                for (int i = 0; i < chars.Length; i++)
                {
                    if (i == 1 && !char.IsUpper(chars[i])) break;
                    bool hasNext = i + 1 < chars.Length;
                    if (i > 0 && hasNext && !char.IsUpper(chars[i + 1]))
                    {
                        if (chars[i + 1] == ' ') chars[i] = char.ToLowerInvariant(chars[i]);
                        break;
                    }
                    chars[i] = char.ToLowerInvariant(chars[i]);
                }
                return new string(chars);
            }
        }
    }

    /// <summary>The options this stand-in honours: WriteIndented and PropertyNamingPolicy.</summary>
    public sealed class JsonSerializerOptions
    {
        public bool WriteIndented { get; set; }
        public JsonNamingPolicy PropertyNamingPolicy { get; set; }
        public JsonNamingPolicy DictionaryKeyPolicy { get; set; }
        public bool PropertyNameCaseInsensitive { get; set; }
        public int MaxDepth { get; set; }
    }

    /// <summary>Converts between .NET values and JSON text.</summary>
    public static class JsonSerializer
    {
        public static string Serialize(object value)
        {
            return Serialize(value, (JsonSerializerOptions)null);
        }

        public static string Serialize(object value, JsonSerializerOptions options)
        {
            var writer = new JsonWriter(options ?? new JsonSerializerOptions());
            writer.Write(value, 0);
            return writer.ToString();
        }

        public static string Serialize<T>(T value)
        {
            return Serialize((object)value, (JsonSerializerOptions)null);
        }

        public static string Serialize<T>(T value, JsonSerializerOptions options)
        {
            return Serialize((object)value, options);
        }

        public static T Deserialize<T>(string json)
        {
            return Deserialize<T>(json, null);
        }

        public static T Deserialize<T>(string json, JsonSerializerOptions options)
        {
            if (json == null) throw new ArgumentNullException("json");
            var element = new JsonElement(JsonParser.Parse(json));
            return (T)Convert(element, typeof(T));
        }

        private static object Convert(JsonElement element, Type type)
        {
            if (type == typeof(JsonElement)) return element;
            if (type == typeof(JsonDocument)) return JsonDocument.Parse(element.GetRawText());
            if (type == typeof(object)) return element.ValueKind == JsonValueKind.Null ? null : (object)element;
            Type nullable = Nullable.GetUnderlyingType(type);
            if (nullable != null)
                return element.ValueKind == JsonValueKind.Null ? null : Convert(element, nullable);
            try
            {
                if (type == typeof(string)) return element.GetString();
                if (type == typeof(bool)) return element.GetBoolean();
                if (type == typeof(int)) return element.GetInt32();
                if (type == typeof(long)) return element.GetInt64();
                if (type == typeof(uint)) return element.GetUInt32();
                if (type == typeof(ulong)) return element.GetUInt64();
                if (type == typeof(short)) return element.GetInt16();
                if (type == typeof(byte)) return element.GetByte();
                if (type == typeof(double)) return element.GetDouble();
                if (type == typeof(float)) return element.GetSingle();
                if (type == typeof(decimal)) return element.GetDecimal();
            }
            catch (Exception e)
            {
                if (e is JsonException) throw;
                throw new JsonException("The JSON value could not be converted to " + type + ": " + e.Message, e);
            }
            if (element.ValueKind == JsonValueKind.Null && !type.IsValueType) return null;
            if (type.IsArray && element.ValueKind == JsonValueKind.Array)
            {
                Type itemType = type.GetElementType();
                Array array = Array.CreateInstance(itemType, element.GetArrayLength());
                int i = 0;
                foreach (JsonElement item in element.EnumerateArray()) array.SetValue(Convert(item, itemType), i++);
                return array;
            }
            if (type.IsGenericType)
            {
                Type definition = type.GetGenericTypeDefinition();
                Type[] args = type.GetGenericArguments();
                if ((definition == typeof(List<>) || definition == typeof(IList<>) || definition == typeof(IEnumerable<>)
                     || definition == typeof(ICollection<>) || definition == typeof(IReadOnlyList<>))
                    && element.ValueKind == JsonValueKind.Array)
                {
                    var list = (IList)Activator.CreateInstance(typeof(List<>).MakeGenericType(args[0]));
                    foreach (JsonElement item in element.EnumerateArray()) list.Add(Convert(item, args[0]));
                    return list;
                }
                if ((definition == typeof(Dictionary<,>) || definition == typeof(IDictionary<,>)
                     || definition == typeof(IReadOnlyDictionary<,>))
                    && args[0] == typeof(string) && element.ValueKind == JsonValueKind.Object)
                {
                    var dictionary = (IDictionary)Activator.CreateInstance(typeof(Dictionary<,>).MakeGenericType(args));
                    foreach (JsonProperty property in element.EnumerateObject())
                        dictionary[property.Name] = Convert(property.Value, args[1]);
                    return dictionary;
                }
            }
            throw new JsonException("The JSON value could not be converted to " + type
                + " (this System.Text.Json stand-in deserializes JsonElement, primitives, arrays, List<T> and Dictionary<string,T>).");
        }
    }

    internal sealed class JsonWriter
    {
        private const int MaxDepth = 64;
        private readonly StringBuilder text = new StringBuilder();
        private readonly JsonSerializerOptions options;

        public JsonWriter(JsonSerializerOptions options) { this.options = options; }

        public override string ToString() { return text.ToString(); }

        public static string Quote(string s)
        {
            var sb = new StringBuilder(s.Length + 2);
            AppendQuoted(sb, s);
            return sb.ToString();
        }

        private static void AppendQuoted(StringBuilder sb, string s)
        {
            sb.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    case '\b': sb.Append("\\b"); break;
                    case '\f': sb.Append("\\f"); break;
                    default:
                        if (c < 0x20 || c > 0x7E || c == '<' || c == '>' || c == '&' || c == '\'' || c == '+' || c == '`')
                            sb.Append("\\u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture));
                        else
                            sb.Append(c);
                        break;
                }
            }
            sb.Append('"');
        }

        private void NewLine(int depth)
        {
            if (!options.WriteIndented) return;
            text.Append('\n');
            text.Append(' ', depth * 2);
        }

        private string PropertyName(string name, bool dictionaryKey)
        {
            JsonNamingPolicy policy = dictionaryKey ? options.DictionaryKeyPolicy : options.PropertyNamingPolicy;
            return policy == null ? name : policy.ConvertName(name);
        }

        private void WriteMember(ref bool first, string name, object value, int depth)
        {
            if (!first) text.Append(',');
            first = false;
            NewLine(depth + 1);
            AppendQuoted(text, name);
            text.Append(options.WriteIndented ? ": " : ":");
            Write(value, depth + 1);
        }

        public void Write(object value, int depth)
        {
            if (depth > MaxDepth)
                throw new JsonException("A possible object cycle was detected, or the object depth is larger than the maximum allowed depth of " + MaxDepth + ".");
            if (value == null) { text.Append("null"); return; }
            if (value is JsonElement) { WriteElement((JsonElement)value, depth); return; }
            if (value is JsonDocument) { WriteElement(((JsonDocument)value).RootElement, depth); return; }
            if (value is string) { AppendQuoted(text, (string)value); return; }
            if (value is char) { AppendQuoted(text, value.ToString()); return; }
            if (value is bool) { text.Append((bool)value ? "true" : "false"); return; }
            if (value is Enum)
            {
                text.Append(System.Convert.ToString(System.Convert.ChangeType(value, Enum.GetUnderlyingType(value.GetType())), CultureInfo.InvariantCulture));
                return;
            }
            if (value is int || value is long || value is short || value is sbyte || value is byte
                || value is uint || value is ulong || value is ushort || value is decimal)
            {
                text.Append(((IFormattable)value).ToString(null, CultureInfo.InvariantCulture));
                return;
            }
            if (value is double || value is float)
            {
                double d = System.Convert.ToDouble(value, CultureInfo.InvariantCulture);
                if (double.IsNaN(d) || double.IsInfinity(d))
                    throw new ArgumentException(".NET number values such as positive and negative infinity cannot be written as valid JSON.");
                string r = value is float
                    ? ((float)value).ToString("R", CultureInfo.InvariantCulture)
                    : d.ToString("R", CultureInfo.InvariantCulture);
                text.Append(r);
                return;
            }
            if (value is System.Numerics.BigInteger)
            {
                text.Append(((System.Numerics.BigInteger)value).ToString(CultureInfo.InvariantCulture));
                return;
            }
            if (value is DateTime) { AppendQuoted(text, ((DateTime)value).ToString("O", CultureInfo.InvariantCulture)); return; }
            if (value is DateTimeOffset) { AppendQuoted(text, ((DateTimeOffset)value).ToString("O", CultureInfo.InvariantCulture)); return; }
            if (value is TimeSpan) { AppendQuoted(text, ((TimeSpan)value).ToString("c", CultureInfo.InvariantCulture)); return; }
            if (value is Guid) { AppendQuoted(text, ((Guid)value).ToString("D")); return; }
            if (value is Uri) { AppendQuoted(text, ((Uri)value).OriginalString); return; }
            if (value is Type || value is Delegate || value is IntPtr)
                throw new NotSupportedException("Serialization of '" + value.GetType() + "' instances is not supported.");

            if (value is IDictionary)
            {
                text.Append('{');
                bool firstKey = true;
                foreach (DictionaryEntry entry in (IDictionary)value)
                    WriteMember(ref firstKey, PropertyName(KeyText(entry.Key), true), entry.Value, depth);
                if (!firstKey) NewLine(depth);
                text.Append('}');
                return;
            }
            Type generic = GenericDictionaryInterface(value.GetType());
            if (generic != null)
            {
                var entries = new List<KeyValuePair<object, object>>();
                foreach (object entry in (IEnumerable)value)
                {
                    Type t = entry.GetType();
                    entries.Add(new KeyValuePair<object, object>(
                        t.GetProperty("Key").GetValue(entry, null), t.GetProperty("Value").GetValue(entry, null)));
                }
                text.Append('{');
                bool firstEntry = true;
                foreach (var entry in entries)
                    WriteMember(ref firstEntry, PropertyName(KeyText(entry.Key), true), entry.Value, depth);
                if (!firstEntry) NewLine(depth);
                text.Append('}');
                return;
            }
            if (value is IEnumerable)
            {
                text.Append('[');
                bool first = true;
                foreach (object item in (IEnumerable)value)
                {
                    if (!first) text.Append(',');
                    first = false;
                    NewLine(depth + 1);
                    Write(item, depth + 1);
                }
                if (!first) NewLine(depth);
                text.Append(']');
                return;
            }

            text.Append('{');
            bool firstProperty = true;
            foreach (PropertyInfo property in value.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                if (!property.CanRead || property.GetIndexParameters().Length != 0) continue;
                MethodInfo getter = property.GetGetMethod();
                if (getter == null) continue;
                WriteMember(ref firstProperty, PropertyName(property.Name, false), getter.Invoke(value, null), depth);
            }
            if (!firstProperty) NewLine(depth);
            text.Append('}');
        }

        private static string KeyText(object key)
        {
            var formattable = key as IFormattable;
            return formattable != null ? formattable.ToString(null, CultureInfo.InvariantCulture) : key.ToString();
        }

        private static Type GenericDictionaryInterface(Type type)
        {
            foreach (Type candidate in type.GetInterfaces())
            {
                if (!candidate.IsGenericType) continue;
                Type definition = candidate.GetGenericTypeDefinition();
                if (definition == typeof(IDictionary<,>) || definition == typeof(IReadOnlyDictionary<,>))
                    return candidate;
            }
            return null;
        }

        private void WriteElement(JsonElement element, int depth)
        {
            JsonNode node = element.Node;
            switch (element.ValueKind)
            {
                case JsonValueKind.Undefined:
                    throw new InvalidOperationException("Operation is not valid due to the current state of the object.");
                case JsonValueKind.Null: text.Append("null"); return;
                case JsonValueKind.True: text.Append("true"); return;
                case JsonValueKind.False: text.Append("false"); return;
                case JsonValueKind.Number: text.Append(node.Text); return;
                case JsonValueKind.String: AppendQuoted(text, node.Text); return;
                case JsonValueKind.Array:
                    {
                        text.Append('[');
                        bool first = true;
                        foreach (JsonNode item in node.Items)
                        {
                            if (!first) text.Append(',');
                            first = false;
                            NewLine(depth + 1);
                            WriteElement(new JsonElement(item), depth + 1);
                        }
                        if (!first) NewLine(depth);
                        text.Append(']');
                        return;
                    }
                default:
                    {
                        text.Append('{');
                        bool first = true;
                        foreach (var member in node.Members)
                        {
                            if (!first) text.Append(',');
                            first = false;
                            NewLine(depth + 1);
                            AppendQuoted(text, member.Key);
                            text.Append(options.WriteIndented ? ": " : ":");
                            WriteElement(new JsonElement(member.Value), depth + 1);
                        }
                        if (!first) NewLine(depth);
                        text.Append('}');
                        return;
                    }
            }
        }
    }

    internal sealed class JsonParser
    {
        private const int MaxDepth = 64;
        private readonly string s;
        private int pos;

        private JsonParser(string s) { this.s = s; }

        public static JsonNode Parse(string json)
        {
            var parser = new JsonParser(json);
            parser.SkipWhitespace();
            JsonNode root = parser.ParseValue(0);
            parser.SkipWhitespace();
            if (parser.pos != json.Length) throw parser.Error("'" + json[parser.pos] + "' is invalid after a single JSON value. Expected end of data.");
            return root;
        }

        private JsonException Error(string message)
        {
            int line = 0, column = 0;
            for (int i = 0; i < pos && i < s.Length; i++)
            {
                if (s[i] == '\n') { line++; column = 0; } else column++;
            }
            return new JsonException(message + " LineNumber: " + line + " | BytePositionInLine: " + column + ".");
        }

        private void SkipWhitespace()
        {
            while (pos < s.Length && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n' || s[pos] == '\r')) pos++;
        }

        private JsonNode ParseValue(int depth)
        {
            if (depth > MaxDepth) throw Error("The maximum configured depth of " + MaxDepth + " has been exceeded.");
            if (pos >= s.Length) throw Error("The input does not contain any JSON tokens.");
            int start = pos;
            var node = new JsonNode();
            char c = s[pos];
            if (c == '{')
            {
                pos++;
                node.Kind = JsonValueKind.Object;
                node.Members = new List<KeyValuePair<string, JsonNode>>();
                SkipWhitespace();
                if (pos < s.Length && s[pos] == '}') pos++;
                else
                {
                    while (true)
                    {
                        SkipWhitespace();
                        if (pos >= s.Length || s[pos] != '"') throw Error("Expected a property name.");
                        string name = ParseString();
                        SkipWhitespace();
                        if (pos >= s.Length || s[pos] != ':') throw Error("Expected ':' after a property name.");
                        pos++;
                        SkipWhitespace();
                        node.Members.Add(new KeyValuePair<string, JsonNode>(name, ParseValue(depth + 1)));
                        SkipWhitespace();
                        if (pos < s.Length && s[pos] == ',') { pos++; continue; }
                        if (pos < s.Length && s[pos] == '}') { pos++; break; }
                        throw Error("Expected ',' or '}' in an object.");
                    }
                }
            }
            else if (c == '[')
            {
                pos++;
                node.Kind = JsonValueKind.Array;
                node.Items = new List<JsonNode>();
                SkipWhitespace();
                if (pos < s.Length && s[pos] == ']') pos++;
                else
                {
                    while (true)
                    {
                        SkipWhitespace();
                        node.Items.Add(ParseValue(depth + 1));
                        SkipWhitespace();
                        if (pos < s.Length && s[pos] == ',') { pos++; continue; }
                        if (pos < s.Length && s[pos] == ']') { pos++; break; }
                        throw Error("Expected ',' or ']' in an array.");
                    }
                }
            }
            else if (c == '"')
            {
                node.Kind = JsonValueKind.String;
                node.Text = ParseString();
            }
            else if (c == '-' || (c >= '0' && c <= '9'))
            {
                node.Kind = JsonValueKind.Number;
                node.Text = ParseNumber();
            }
            else if (Literal("true")) node.Kind = JsonValueKind.True;
            else if (Literal("false")) node.Kind = JsonValueKind.False;
            else if (Literal("null")) node.Kind = JsonValueKind.Null;
            else throw Error("'" + c + "' is an invalid start of a value.");
            node.Raw = s.Substring(start, pos - start);
            return node;
        }

        private bool Literal(string word)
        {
            if (string.CompareOrdinal(s, pos, word, 0, word.Length) != 0) return false;
            pos += word.Length;
            return true;
        }

        private string ParseNumber()
        {
            int start = pos;
            if (s[pos] == '-') pos++;
            if (pos < s.Length && s[pos] == '0') pos++;
            else if (pos < s.Length && s[pos] >= '1' && s[pos] <= '9') { while (pos < s.Length && char.IsDigit(s[pos]) && s[pos] < 128) pos++; }
            else throw Error("Invalid number.");
            if (pos < s.Length && s[pos] == '.')
            {
                pos++;
                if (pos >= s.Length || s[pos] < '0' || s[pos] > '9') throw Error("Invalid number: expected a digit after '.'.");
                while (pos < s.Length && s[pos] >= '0' && s[pos] <= '9') pos++;
            }
            if (pos < s.Length && (s[pos] == 'e' || s[pos] == 'E'))
            {
                pos++;
                if (pos < s.Length && (s[pos] == '+' || s[pos] == '-')) pos++;
                if (pos >= s.Length || s[pos] < '0' || s[pos] > '9') throw Error("Invalid number: expected a digit in the exponent.");
                while (pos < s.Length && s[pos] >= '0' && s[pos] <= '9') pos++;
            }
            return s.Substring(start, pos - start);
        }

        private string ParseString()
        {
            pos++; // opening quote
            var sb = new StringBuilder();
            while (true)
            {
                if (pos >= s.Length) throw Error("Expected end of string, but instead reached end of data.");
                char c = s[pos++];
                if (c == '"') break;
                if (c < 0x20) throw Error("Invalid control character in a string.");
                if (c != '\\') { sb.Append(c); continue; }
                if (pos >= s.Length) throw Error("Unterminated escape sequence.");
                char e = s[pos++];
                switch (e)
                {
                    case '"': sb.Append('"'); break;
                    case '\\': sb.Append('\\'); break;
                    case '/': sb.Append('/'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case 'n': sb.Append('\n'); break;
                    case 'r': sb.Append('\r'); break;
                    case 't': sb.Append('\t'); break;
                    case 'u':
                        int code;
                        if (pos + 4 > s.Length || !int.TryParse(s.Substring(pos, 4), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out code))
                            throw Error("Invalid \\u escape sequence.");
                        pos += 4;
                        sb.Append((char)code);
                        break;
                    default:
                        throw Error("'" + e + "' is not a valid escapable character within a JSON string.");
                }
            }
            return sb.ToString();
        }
    }
}
