const CURRENCIES = { EUR: "€", USD: "$",GBP: "£" };

function formatPrice(cents, currency) {
    const symbol = CURRENCIES[currency] || currency + " ";
  return symbol + (cents / 100).toFixed(2)
}

module.exports = { formatPrice };
