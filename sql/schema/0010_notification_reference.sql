-- The message's reference: the short checked code (enrolment/references.py, 9 symbols stored
-- without separators, printed K7QX-M4RT-9) a person reads out on the 3422 line and that letters
-- and emails show instead of the notification id. Drawn when the message is created; unique across
-- the rollout, so that it names one message. Messages created before this file have none (NULL:
-- the index allows any number of them).
ALTER TABLE notifications ADD COLUMN reference TEXT;
CREATE UNIQUE INDEX ux_notifications_reference ON notifications (reference)
