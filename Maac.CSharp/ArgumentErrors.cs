namespace Maac;

/// <summary>Restating the library's argument errors in terms of the façade's own parameters.</summary>
internal static class ArgumentErrors
{
    /// <summary>
    /// The same error for the façade's parameter <paramref name="parameter"/>: the message without the suffix
    /// .NET adds for the inner parameter (so that it is neither repeated nor names a parameter the caller never saw).
    /// </summary>
    public static ArgumentException For(ArgumentException inner, string parameter) => new(Reason(inner), parameter, inner);

    /// <summary>An argument error's message without the " (Parameter 'name')" suffix .NET appends to it.</summary>
    public static string Reason(ArgumentException e)
    {
        var suffix = e.ParamName is null ? null : $" (Parameter '{e.ParamName}')";
        return suffix is not null && e.Message.EndsWith(suffix, StringComparison.Ordinal) ? e.Message[..^suffix.Length] : e.Message;
    }
}
