-- Intake looks up a customer's other live subscriptions when the one its
-- Tenant follows ends (the Tenant switches to it rather than going away).
CREATE INDEX IF NOT EXISTS stripe_subscriptions_customer ON stripe_subscriptions (customer_id);
