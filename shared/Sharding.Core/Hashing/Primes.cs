namespace Sharding.Hashing;

/// <summary>Primality for table sizes (Maglev needs a prime size so that every skip visits every slot).</summary>
public static class Primes
{
    /// <summary>Whether <paramref name="n"/> is prime (trial division; table sizes are small).</summary>
    /// <param name="n">The number.</param>
    /// <returns>True for primes.</returns>
    public static bool IsPrime(long n)
    {
        if (n < 2)
        {
            return false;
        }

        if (n % 2 == 0)
        {
            return n == 2;
        }

        for (long d = 3; d * d <= n; d += 2)
        {
            if (n % d == 0)
            {
                return false;
            }
        }

        return true;
    }
}
